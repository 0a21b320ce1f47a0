"""Seconds per SASRec training step with the batch in passes (`evaluation.passes`) and in one pass,
on the same batches, the two interleaved round by round so that machine noise falls on both alike.

    python benchmarks/passes_ab.py                       # xu2024-ml-1m, CE and SCE, 4 batches x 4 rounds
    python benchmarks/passes_ab.py --suites benchmarks/xu2024-beauty.yaml --losses CE

epoch_speed.py times each variant in its own epoch, one after another; a difference under ~10% there
can be the machine's. This is the controlled comparison behind `length_passes.PASS_TOKENS`. Writes
results/epoch-speed/passes_ab.{json,md}.
"""

from __future__ import annotations

import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from epoch_speed import speed_parser

from recbole_llm.benchmark.records import provenance, versions_text, write_result
from recbole_llm.benchmark.suite import load_suite
from recbole_llm.evaluation.passes import passes_loss
from recbole_llm.quick_start import train

HERE = Path(__file__).parent


def compare(suite: dict, loss: str, batches: int, rounds: int) -> dict | None:
    """Step seconds in passes and in one pass, or None where the suite's batch is a single pass."""
    entry = next(e["config"] for e in suite["models"] if e["name"] == f"SASRec-{loss}")
    config = {**suite["config"], **entry, "epochs": 0, "state": "WARNING", "seed": 2020}
    config["data_path"] = str((suite["file"].parent / config["data_path"]).resolve())
    trained = train("SASRec", suite["dataset"], None, config, saved=False)
    model, optimizer = trained.trainer.model, trained.trainer.optimizer
    sample = [batch for _, batch in zip(range(batches), trained.split.train)]
    passes = len(list(model.loss_passes(sample[0])))
    if passes == 1:
        print(f"{suite['name']} | {loss}: the batch is one pass; nothing to compare")
        return None
    model.train()

    def step(batch, in_passes: bool) -> float:
        start = time.perf_counter()
        optimizer.zero_grad()
        loss_value = passes_loss(model, batch) if in_passes else model.calculate_loss(batch)
        loss_value.backward()
        optimizer.step()
        return time.perf_counter() - start

    seconds = {"passes": [], "one pass": []}
    for round_ in range(rounds):
        order = ("passes", "one pass") if round_ % 2 else ("one pass", "passes")
        for label in order:
            seconds[label] += [step(batch, label == "passes") for batch in sample]
    row = {"passes_per_batch": passes, "batch_size": len(sample[0]), "step_s": seconds}
    row.update({f"{label} mean_s": statistics.fmean(v) for label, v in seconds.items()})
    row["ratio"] = row["passes mean_s"] / row["one pass mean_s"]
    print(
        f"{suite['name']} | {loss}: passes {row['passes mean_s']:.2f} s, one pass "
        f"{row['one pass mean_s']:.2f} s a step ({row['ratio']:.2f}x)"
    )
    return row


def main() -> None:
    parser = speed_parser(__doc__, suites=[str(HERE / "xu2024-ml-1m.yaml")])
    parser.add_argument("--losses", nargs="+", default=["CE", "SCE"])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "batches": args.batches, "rounds": args.rounds, "suites": {}}
    for path in args.suites:
        suite = load_suite(path)
        rows = {loss: compare(suite, loss, args.batches, args.rounds) for loss in args.losses}
        result["suites"][suite["name"]] = {loss: row for loss, row in rows.items() if row}
    result.update(provenance(shlex.join(["python", *sys.argv])))
    lines = [
        "## SASRec training step: batch in passes vs one pass, interleaved on the same batches",
        "",
        f"`{result['command']}`; {args.threads} torch thread(s); {args.batches} batches x {args.rounds} "
        "rounds per arm, the arms' order alternating by round; " + versions_text(result["versions"]) + ".",
        "",
        "| suite | loss | batch | passes | s/step in passes | s/step in one pass | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in result["suites"].items():
        for loss, row in rows.items():
            lines.append(
                f"| {name} | {loss} | {row['batch_size']} | {row['passes_per_batch']} | "
                f"{row['passes mean_s']:.2f} | {row['one pass mean_s']:.2f} | {row['ratio']:.2f}x |"
            )
    lines.append("")
    write_result(HERE / "results" / "epoch-speed", "passes_ab", result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
