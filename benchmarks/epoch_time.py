"""Seconds per training epoch of RecBole's SASRec (one row per prefix) and the plugin's SASRec
(all-position training), measured in one process on the same data, config and machine.

    python benchmarks/epoch_time.py                  # ml-100k, 2 epochs each
    python benchmarks/epoch_time.py --epochs 3 --dataset ml-1m --data_path ../shared/data

Writes results/<dataset>-epoch-time/epoch_time.{json,md}. Model quality is not measured here (too
few epochs): the leaderboards compare NDCG@10 after full training.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

from recbole_llm.benchmark.records import provenance, versions_text, write_result
from recbole_llm.quick_start import train

MODELS = {"RecBole SASRec (per prefix)": "recbole.SASRec", "recbole-llm SASRec (all positions)": "SASRec"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--config_files", default=None, help="space-separated YAML files for both models")
    args = parser.parse_args()
    config = {"epochs": args.epochs, "seed": args.seed, "show_progress": False, "state": "WARNING"}
    if args.data_path:
        config["data_path"] = str(Path(args.data_path).resolve())
    rows = {}
    for label, model in MODELS.items():
        files = args.config_files.split() if args.config_files else None
        trained = train(model, args.dataset, files, config, saved=False)
        seconds = trained.trainer.epoch_seconds
        rows[label] = {
            "model": model,
            "epoch_s": seconds,
            "mean_epoch_s": statistics.fmean(seconds),
            "train_rows": len(trained.split.train._dataset),
            "train_batch_size": trained.config["train_batch_size"],
        }
        print(f"{label}: {rows[label]['mean_epoch_s']:.2f} s/epoch over {len(seconds)} epochs", flush=True)
    slow, fast = (rows[label]["mean_epoch_s"] for label in MODELS)
    result = {
        "dataset": args.dataset,
        "ratio": slow / fast,
        "runs": rows,
        "config": config,
        **provenance(shlex.join(["python", *sys.argv])),
    }
    out = Path(__file__).parent / "results" / f"{args.dataset}-epoch-time"
    lines = [
        f"## Training time per epoch on {args.dataset}, measured in one run",
        "",
        f"`{result['command']}` on {result['machine']['cpu_count']} CPU cores, "
        + versions_text(result["versions"])
        + f"; seed {args.seed}; RecBole defaults otherwise.",
        "",
        "| model | training rows | batch | s/epoch |",
        "|---|---|---|---|",
        *(
            f"| {label} | {r['train_rows']} | {r['train_batch_size']} | {r['mean_epoch_s']:.2f} |"
            for label, r in rows.items()
        ),
        "",
        f"**Ratio RecBole / recbole-llm: {result['ratio']:.1f}x** less time per epoch.",
        "",
    ]
    write_result(out, "epoch_time", result, lines)
    print(f"ratio {result['ratio']:.1f}x -> {out}")


if __name__ == "__main__":
    main()
