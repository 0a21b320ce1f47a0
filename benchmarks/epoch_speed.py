"""Seconds per SASRec training epoch against the FLOP bound, for CE and SCE with negatives drawn per
position, per sequence and per batch, on the data and settings of the Xu et al. suites.

    python benchmarks/epoch_speed.py                     # xu2024-ml-1m and xu2024-beauty, 1 epoch each
    python benchmarks/epoch_speed.py --suites benchmarks/xu2024-ml-1m.yaml --epochs 2 --threads 2

The bound is the epoch's arithmetic (matmul FLOPs of forward and backward, counted from the shapes of
the padded batches, every sequence at the suite's maximum length) divided by the float32 matmul
throughput measured in the same run; a sampled loss counts its K + 1 scores per target, even where
per-position negatives are picked from the full score matrix; `items-only bound` counts only
positions that hold an item. Batches now run in passes of similar lengths, each only up to its longest
sequence (`length_passes`), so an epoch computes between the two; the `padded passes` rows run every
sequence at full length in passes of equal rows, as before. The `anomaly on` row is how every epoch
ran before `detect_anomaly` (RecBole's SINE switches autograd's anomaly mode on at import); the
`math-path attention` row draws attention dropout in torch's SDPA, as before `chunked_attention`;
`one pass per batch` rows run forward and backward over the whole batch (up to its longest sequence)
at once, as before `evaluation.passes` (rows are timed one after another: passes_ab.py compares passes
and one pass interleaved, on the same batches); the `gathered` row scores
per-position negatives from their gathered embeddings, as before they were picked from the full score
matrix (`losses.FULL_SCORES_BELOW`). Validation: validation_speed.py. Writes
results/epoch-speed/epoch_speed.{json,md}. Quality of the sharing modes:
benchmarks/ml-100k-negative-sharing.yaml.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from recbole_llm import losses
from recbole_llm.benchmark.records import provenance, versions_text, write_result
from recbole_llm.benchmark.suite import load_suite
from recbole_llm.evaluation import trainer as trainer_module
from recbole_llm.evaluation.passes import uses_passes
from recbole_llm.models.sequential import fused_attention, next_item, sasrec
from recbole_llm.quick_start import train

HERE = Path(__file__).parent
XU_SUITES = [str(HERE / "xu2024-ml-1m.yaml"), str(HERE / "xu2024-beauty.yaml")]


def variants(negatives: int) -> dict[str, dict]:
    sce = {"loss_type": "SCE", "num_negatives": negatives}
    return {
        "CE": {"loss_type": "CE"},
        "CE, anomaly on (before)": {"loss_type": "CE", "detect_anomaly": True},
        "CE, math-path attention (before)": {"loss_type": "CE", "sdpa_attention": True},
        "CE, no attention dropout": {"loss_type": "CE", "attn_dropout_prob": 0.0},
        "CE, one pass per batch": {"loss_type": "CE", "one_pass": True},
        "CE, padded passes (before)": {"loss_type": "CE", "padded": True},
        f"SCE K={negatives}, per position": {**sce, "negative_sharing": "position"},
        f"SCE K={negatives}, per position, gathered (before)": {
            **sce,
            "negative_sharing": "position",
            "gather_negatives": True,
        },
        f"SCE K={negatives}, per position, one pass per batch": {
            **sce,
            "negative_sharing": "position",
            "one_pass": True,
        },
        f"SCE K={negatives}, per position, padded passes (before)": {
            **sce,
            "negative_sharing": "position",
            "padded": True,
        },
        f"SCE K={negatives}, per sequence": {**sce, "negative_sharing": "sequence"},
        f"SCE K={negatives}, per batch": {**sce, "negative_sharing": "batch"},
    }


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul throughput of `repeats` square products: what the bound divides by."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def epoch_flops(config, dataset, loss: dict) -> tuple[float, float]:
    """Forward + backward matmul FLOPs of one epoch: as computed (padded) and over item positions only.

    Per token and layer: Q, K, V, O projections 8H^2, feed-forward 4 H inner, attention scores and
    context 4 L H; per target, the output layer 2 H x (all items for CE, K + 1 for a sampled loss).
    Backward costs twice the forward.
    """
    hidden, inner, layers = config["hidden_size"], config["inner_size"], config["n_layers"]
    length = config["MAX_ITEM_LIST_LENGTH"]
    rows = len(dataset)
    targets = float(dataset.inter_feat[dataset.item_list_length_field].sum())
    scored = dataset.item_num if loss["loss_type"] == "CE" else loss["num_negatives"] + 1

    def total(tokens: float, context: float) -> float:
        per_token = layers * (8 * hidden**2 + 4 * hidden * inner + 4 * context * hidden)
        return 3 * (tokens * per_token + targets * 2 * hidden * scored)

    return total(rows * length, length), total(targets, targets / rows / 2)


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, p: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(query, key, value, dropout_p=p, is_causal=True)


def measure(suite: dict, label: str, change: dict, epochs: int) -> dict:
    config = {**suite["config"], **change, "epochs": 0, "state": "WARNING", "seed": 2020}
    config["data_path"] = str((suite["file"].parent / config["data_path"]).resolve())
    anomaly = bool(config.pop("detect_anomaly", False))
    # Per-position negatives scored from gathered embeddings, as before `losses.FULL_SCORES_BELOW`.
    below = 0 if config.pop("gather_negatives", False) else losses.FULL_SCORES_BELOW
    # Attention through torch's SDPA, whose CPU math path drew the dropout, as before `chunked_attention`.
    attention = sdpa if config.pop("sdpa_attention", False) else fused_attention.causal_attention
    # The whole batch in one forward and backward pass, as before `evaluation.passes`.
    passes = (lambda *_: False) if config.pop("one_pass", False) else uses_passes
    padded = padded_patches(config["MAX_ITEM_LIST_LENGTH"]) if config.pop("padded", False) else []
    trained = train("SASRec", suite["dataset"], None, config, saved=False)
    trainer, loader = trained.trainer, trained.split.train
    seconds = []
    with (
        torch.autograd.set_detect_anomaly(anomaly),
        mock.patch.object(losses, "FULL_SCORES_BELOW", below),
        mock.patch.object(fused_attention, "causal_attention", attention),
        mock.patch.object(trainer_module, "uses_passes", passes),
        contextlib.ExitStack() as stack,
    ):
        for patch in padded:
            stack.enter_context(patch)
        for epoch in range(epochs):
            start = time.perf_counter()
            trainer._train_epoch(loader, epoch)
            seconds.append(time.perf_counter() - start)
    padded, items_only = epoch_flops(trained.config, loader._dataset, change)
    row = {"config": change, "epoch_s": seconds, "s_per_epoch": statistics.fmean(seconds)}
    row.update(gflop=padded / 1e9, items_only_gflop=items_only / 1e9, batches=len(loader))
    print(f"{suite['name']} | {label}: {row['s_per_epoch']:.1f} s/epoch, {row['gflop']:.0f} GFLOP")
    return row


def padded_patches(length: int) -> list:
    """Batches at their full padded length in passes of equal rows, as before `length_passes`."""

    def equal_rows(lengths: torch.Tensor, tokens: int) -> list[torch.Tensor]:
        return list(torch.arange(len(lengths)).split(max(1, tokens // length)))

    def untrimmed(item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return item_seq

    return [
        mock.patch.object(next_item, "trimmed", untrimmed),
        mock.patch.object(sasrec, "trimmed", untrimmed),
        mock.patch.object(sasrec, "length_passes", equal_rows),
    ]


def speed_parser(doc: str, suites: list[str] = XU_SUITES) -> argparse.ArgumentParser:
    """The options every speed script shares: which suites, and how many torch threads."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--suites", nargs="+", default=suites)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main() -> None:
    parser = speed_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "epochs": args.epochs, "suites": {}}
    result["matmul_gflops_before"] = matmul_gflops()
    for path in args.suites:
        suite = load_suite(path)
        negatives = next(e["config"]["num_negatives"] for e in suite["models"] if e["name"] == "SASRec-SCE")
        result["suites"][suite["name"]] = {
            label: measure(suite, label, change, args.epochs) for label, change in variants(negatives).items()
        }
    result["matmul_gflops_after"] = matmul_gflops()
    peak = max(result["matmul_gflops_before"], result["matmul_gflops_after"])
    result.update(provenance(shlex.join(["python", *sys.argv])))
    lines = [
        "## SASRec seconds per training epoch vs the FLOP bound, measured in one run",
        "",
        f"`{result['command']}`; {args.threads} torch thread(s), {args.epochs} epoch(s) a row; "
        f"float32 matmul {result['matmul_gflops_before']:.0f} / {result['matmul_gflops_after']:.0f} GFLOP/s "
        f"(start / end of the run; the bound uses the larger); "
        + versions_text(result["versions"])
        + ". Each suite's own settings (length, batch, dropout); `bound` = the epoch's matmul FLOPs "
        "(padding included) / matmul throughput.",
        "",
        "| suite | training | s/epoch | vs CE | GFLOP | bound s | ratio to bound | items-only bound s | "
        "ratio to items-only bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in result["suites"].items():
        ce = rows["CE"]["s_per_epoch"]
        for label, row in rows.items():
            bound, items_only = row["gflop"] / peak, row["items_only_gflop"] / peak
            row.update(bound_s=bound, ratio=row["s_per_epoch"] / bound)
            row["items_only_ratio"] = row["s_per_epoch"] / items_only
            lines.append(
                f"| {name} | {label} | {row['s_per_epoch']:.1f} | {row['s_per_epoch'] / ce:.2f}x | "
                f"{row['gflop']:.0f} | {bound:.1f} | {row['ratio']:.2f}x | "
                f"{items_only:.1f} | {row['items_only_ratio']:.2f}x |"
            )
    lines.append("")
    write_result(HERE / "results" / "epoch-speed", "epoch_speed", result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
