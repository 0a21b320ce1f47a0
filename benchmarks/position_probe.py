"""Position bias of a suite's LLM rankers, before and after fine-tuning: each named row is tested with the
ground truth shown at fixed slots (`position_probe`) of the same candidate lists. An unbiased ranker
scores alike at every slot; zero-shot SmolLM2 mostly picks label A (slot 0).

    python benchmarks/position_probe.py benchmarks/ml-100k-finetune.yaml "zero-shot verbalizer" verbalizer-FT

A zero-shot row runs as the suite configures it; a fine-tuned row is not retrained: the adapter its suite
run saved (beside the checkpoint its record names) is loaded with `adapter_path` and `epochs: 0`. Run the
suite first. Writes <suite output>/position_probe.{json,md}; rows probed earlier on the same lists and
slots stay in them unless probed again (each row names the command that probed it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from recbole_llm.benchmark.records import provenance, versions_text, write_result
from recbole_llm.benchmark.suite import load_suite, plan, trained_adapter
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.models.llm.finetuned import FineTunedLLMRanker
from recbole_llm.quick_start import run
from recbole_llm.registry import get_model

METRICS = ("ndcg@1", "ndcg@10")


def probe_config(suite: dict, entry_run, users: int) -> dict:
    """The row's suite config, untrained, on `users` users; a fine-tuned row with its saved adapter."""
    config = {**entry_run.config, "epochs": 0, "eval_users": users}
    if issubclass(get_model(entry_run.entry["model"]), FineTunedLLMRanker):
        trained = entry_run.adapter_from or entry_run  # a row testing another row's adapter: that one
        try:
            config["adapter_path"] = str(trained_adapter(suite, trained))
        except RecBoleLLMError as error:
            sys.exit(f"position_probe: {error}")
    return config


def earlier_rows(path: Path, label: str, slots: list[int]) -> dict[str, dict]:
    """The rows an earlier probe wrote to `path` on the same lists (`label`) and `slots`."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    return {
        name: {"command": earlier["command"], **row}  # rows of older files name their file's command
        for name, row in earlier["results"].items()
        if row.get("label") == label and [int(s) for s in row["slots"]] == slots
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite", help="the suite YAML whose rows are probed")
    parser.add_argument("rows", nargs="+", help="row names of the suite (LLM rankers)")
    parser.add_argument("--slots", type=int, nargs="+", default=[0, 5, 10, 15, 19])
    parser.add_argument("--users", type=int, default=50, help="test users (a seeded sample)")
    parser.add_argument("--size", type=int, default=20, help="candidates per list (uniform)")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    runs = {r.entry["name"]: r for r in plan(suite)}
    unknown = [name for name in args.rows if name not in runs]
    if unknown:
        sys.exit(f"position_probe: {unknown} not in the suite; it lists {list(runs)}.")
    protocol = {"type": "uniform", "size": args.size, "eval_users": args.users}
    command = shlex.join(["python", *sys.argv])
    results: dict[str, dict] = {}
    for name in args.rows:
        config = probe_config(suite, runs[name], args.users)
        results[name] = {"adapter_path": config.get("adapter_path"), "command": command, "slots": {}}
        for slot in args.slots:
            out = run(
                runs[name].entry["model"],
                suite["dataset"],
                config_dict={**config, "position_probe": slot},
                protocols=[protocol],
                saved=False,
            )
            (label,) = out.test
            results[name]["slots"][slot] = {m: float(out.test[label][m]) for m in METRICS}
            results[name]["label"] = label
            print(f"{name} @ slot {slot}: {results[name]['slots'][slot]}", file=sys.stderr)
    label = next(iter(results.values()))["label"]
    results = {**earlier_rows(Path(suite["output"]) / "position_probe.json", label, args.slots), **results}
    record = {"suite": suite["name"], "results": results, **provenance(command)}
    commands = "; ".join(f"`{c}`" for c in dict.fromkeys(r["command"] for r in results.values()))
    lines = [
        f"## Position bias on {label}: the ground truth shown at slot k of {args.size}",
        "",
        f"{commands}; {versions_text(record['versions'])}. NDCG@1 / NDCG@10 per slot; spread is "
        "the largest minus the smallest NDCG@10 over the slots (0 for a ranker without position bias).",
        "",
        "| model | " + " | ".join(f"slot {s}" for s in args.slots) + " | spread |",
        "|---|" + "---|" * (len(args.slots) + 1),
    ]
    for name, r in results.items():
        tens = [v["ndcg@10"] for v in r["slots"].values()]
        cells = [f"{v['ndcg@1']:.3f} / {v['ndcg@10']:.3f}" for v in r["slots"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {max(tens) - min(tens):.3f} |")
    write_result(Path(suite["output"]), "position_probe", record, [*lines, ""])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
