"""Seconds per full-ranking validation (every user, all items) of SASRec on the Xu et al. suites: as
now, and with each earlier way of computing it, the variants interleaved round by round.

    python benchmarks/validation_speed.py                 # xu2024-ml-1m and xu2024-beauty, 3 rounds
    python benchmarks/validation_speed.py --suites benchmarks/xu2024-beauty.yaml --rounds 5

Variants: `now`; `tie keys for every row (before)`: the collector ranks every user by
`ties.pessimistic_ranking`'s float64 keys over all items, as before `ties.pessimistic_topk`; `padded
passes (before)`: every sequence at full length in passes of equal rows, as before `length_passes`
(with the keys too); `every position, one pass (before)`: also the last layer at every position, as
before `SASRec.forward` ran it at the last item only. The model is untrained (CE, seed 2020): the
cost does not depend on the weights. Writes results/epoch-speed/validation_speed.{json,md}.
"""

from __future__ import annotations

import contextlib
import shlex
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from epoch_speed import padded_patches, speed_parser
from recbole.evaluator import Collector

from recbole_llm.benchmark.records import provenance, versions_text, write_result
from recbole_llm.benchmark.suite import load_suite
from recbole_llm.evaluation import ties
from recbole_llm.models.sequential.next_item import NextItemModel
from recbole_llm.models.sequential.sasrec import SASRec
from recbole_llm.quick_start import train

HERE = Path(__file__).parent


def keys_for_every_row(self, scores, interaction, positive_u, positive_i) -> None:
    ranked = ties.pessimistic_ranking(scores, positive_u, positive_i)
    Collector.eval_batch_collect(self, ranked, interaction, positive_u, positive_i)


def variants(length: int) -> dict[str, list]:
    keys = mock.patch.object(ties.TieAwareCollector, "eval_batch_collect", keys_for_every_row)
    return {
        "now": [],
        "tie keys for every row (before)": [keys],
        "padded passes (before)": [keys, *padded_patches(length)],
        "every position, one pass (before)": [
            keys,
            *padded_patches(length),
            mock.patch.object(SASRec, "forward", NextItemModel.forward),
        ],
    }


def measure(suite: dict, rounds: int) -> dict[str, list[float]]:
    config = {**suite["config"], "loss_type": "CE", "epochs": 0, "state": "WARNING", "seed": 2020}
    config["data_path"] = str((suite["file"].parent / config["data_path"]).resolve())
    trained = train("SASRec", suite["dataset"], None, config, saved=False)
    found = {label: [] for label in variants(config["MAX_ITEM_LIST_LENGTH"])}
    for round_ in range(rounds):
        labels = list(found) if round_ % 2 == 0 else list(reversed(found))
        for label in labels:
            with contextlib.ExitStack() as stack:
                for patch in variants(config["MAX_ITEM_LIST_LENGTH"])[label]:
                    stack.enter_context(patch)
                start = time.perf_counter()
                trained.trainer._valid_epoch(trained.split.valid)
                found[label].append(time.perf_counter() - start)
        print(suite["name"], round_, {k: round(statistics.fmean(v), 1) for k, v in found.items()}, flush=True)
    return found


def main() -> None:
    parser = speed_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "rounds": args.rounds, "suites": {}}
    for path in args.suites:
        suite = load_suite(path)
        result["suites"][suite["name"]] = measure(suite, args.rounds)
    result.update(provenance(shlex.join(["python", *sys.argv])))
    labels = list(next(iter(result["suites"].values())))
    lines = [
        "## SASRec full-ranking validation (every user, all items), seconds",
        "",
        f"`{result['command']}`; {args.threads} torch thread(s); mean of {args.rounds} rounds, the "
        "variants interleaved (order reversed every other round); " + versions_text(result["versions"]) + ".",
        "",
        "| suite | " + " | ".join(labels) + " |",
        "|---" * (1 + len(labels)) + "|",
    ]
    for name, seconds in result["suites"].items():
        means = (f"{statistics.fmean(s):.1f}" for s in seconds.values())
        lines.append(f"| {name} | " + " | ".join(means) + " |")
    lines.append("")
    write_result(HERE / "results" / "epoch-speed", "validation_speed", result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
