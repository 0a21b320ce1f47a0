"""What a LoRA training step of the fine-tuned LLM rankers costs against a forward pass of the same
batch, in one run on one machine: tokens/s of each, and their ratio (the issue's aim: a training step at
most 3.5x a forward pass), in float32 and under bfloat16 autocast (`llm_autocast`).

    python benchmarks/finetune_perf.py --threads 2            # ml-100k, SmolLM2-135M, 4 rows a batch
    python benchmarks/finetune_perf.py --rows 2 --repeats 1   # a quicker look

Each ranker is built by the trainer's own path (`train` with 0 epochs) and its `calculate_loss` runs on
one batch of training rows: under `no_grad` in eval mode (the forward), then with backward and an AdamW
step (the training step). The negatives' generator is reset before every call, so both see the very same
prompts; tokens are those the model reads (prompts, plus teacher-forced answers for the list-wise
rankers, plus the permuted view for ALRO). Writes results/ml-100k-finetune/finetune_perf.{json,md}.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from recbole_llm.benchmark.records import provenance, versions_text, write_result
from recbole_llm.quick_start import train

RANKERS = {  # name: (model, config)
    "verbalizer, float32": ("LLMVerbalizerRanker", {}),
    "verbalizer, autocast": ("LLMVerbalizerRanker", {"llm_autocast": True}),
    "pointwise, autocast": ("LLMPointwiseRanker", {"llm_autocast": True}),
    "listwise SFT, autocast": ("LLMListwiseRanker", {"llm_autocast": True, "loss_type": "sft"}),
    "listwise ALRO, autocast": ("LLMListwiseRanker", {"llm_autocast": True, "loss_type": "alro"}),
}


def timed(fn, repeats: int) -> float:
    """Mean seconds of `repeats` calls after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure(model_name: str, config: dict, rows: int, repeats: int) -> dict:
    trained = train(
        model_name, "ml-100k", config_dict={"epochs": 0, "show_progress": False, **config}, saved=False
    )
    model = trained.model
    batch = next(iter(trained.split.train))[:rows]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    state = model.generator.get_state()
    tokens: list[int] = []
    run = model.scorer._run

    def counted(encoded, *args, **kwargs):
        tokens.append(sum(map(len, encoded)))
        return run(encoded, *args, **kwargs)

    model.scorer._run = counted

    def forward():
        model.eval()
        model.generator.set_state(state)
        with torch.no_grad():
            model.calculate_loss(batch)

    def step():
        model.train()
        model.generator.set_state(state)
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()

    forward_s = timed(forward, repeats)
    per_call = sum(tokens) // (repeats + 1)  # the same prompts every call, forward and step alike
    step_s = timed(step, repeats)
    return {
        "model": model_name,
        "config": config,
        "rows": rows,
        "tokens": per_call,
        "forward_s": forward_s,
        "step_s": step_s,
        "forward_tokens_per_s": per_call / forward_s,
        "train_tokens_per_s": per_call / step_s,
        "step_over_forward": step_s / forward_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=4, help="training rows per batch")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls of each (after a warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ml-100k-finetune"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name, (model_name, config) in RANKERS.items():
        results[name] = measure(model_name, config, args.rows, args.repeats)
        r = results[name]
        print(
            f"{name}: {r['tokens']} tokens, forward {r['forward_s']:.2f} s, step {r['step_s']:.2f} s "
            f"({r['step_over_forward']:.2f}x)",
            file=sys.stderr,
        )
    record = {"threads": args.threads, "results": results, **provenance(shlex.join(["python", *sys.argv]))}
    lines = [
        "## LoRA training step vs forward pass (ml-100k, SmolLM2-135M-Instruct)",
        "",
        f"`{record['command']}`; {args.threads} thread(s), {args.rows} training rows a batch, mean of "
        f"{args.repeats} timed calls after a warm-up. " + versions_text(record["versions"]) + ".",
        "",
        "| ranker | tokens | forward s | forward tokens/s | step s | training tokens/s | step / forward |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['tokens']} | {r['forward_s']:.2f} | {r['forward_tokens_per_s']:.0f} | "
            f"{r['step_s']:.2f} | {r['train_tokens_per_s']:.0f} | {r['step_over_forward']:.2f} |"
        )
    write_result(Path(args.out), "finetune_perf", record, [*lines, ""])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
