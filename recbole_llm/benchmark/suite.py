"""Run a suite YAML: every listed model, trained once, tested on every listed protocol.

Each finished (model, protocol) run is written at once as one JSON file, so an interrupted suite
loses nothing; a rerun skips runs whose file was made from the same settings.

Suite format::

    name: ml-100k
    dataset: ml-100k
    config: {seed: 2020}               # shared by every run
    protocols: [{type: full}, {type: uniform, size: 20}]
    seeds: [2020, 2021, 2022]          # optional: every model once per seed; tables show mean ± std
    published:                         # optional: a paper's numbers, tabled next to ours
      source: Xu et al. 2024, Table 2
      SASRec-CE: {Recall@10: 0.0986, NDCG@10: 0.0597}
    notes: text printed under the tables (budgets, deviations from the paper)
    models:
      - {model: Pop, config: {epochs: 1}}
      - {model: SASRec, name: SASRec-CE, config: {epochs: 20}}
    output: results/ml-100k            # relative to the suite file; candidate sets in output/candidates
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import yaml

from recbole_llm.benchmark.records import (
    config_snapshot,
    fingerprint,
    jsonable,
    machine,
    versions,
    versions_text,
)
from recbole_llm.benchmark.table import DEFAULT_COLUMNS, leaderboard, published_comparison
from recbole_llm.data.candidates import ProtocolSpec
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.registry import get_model

_SUITE_KEYS = {
    "name",
    "dataset",
    "config",
    "protocols",
    "models",
    "output",
    "columns",
    "seeds",
    "published",
    "notes",
}


def load_suite(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecBoleLLMError(f"Suite file not found: {path}")
    suite = yaml.safe_load(path.read_text()) or {}
    unknown = set(suite) - _SUITE_KEYS
    if unknown:
        raise RecBoleLLMError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(_SUITE_KEYS)}.")
    for key in ("dataset", "models"):
        if key not in suite:
            raise RecBoleLLMError(f"{path}: missing `{key}`.")
    suite.setdefault("name", path.stem)
    suite.setdefault("config", {})
    suite["protocols"] = [ProtocolSpec.parse(p) for p in suite.get("protocols") or ["full"]]
    suite["models"] = [{"model": m} if isinstance(m, str) else m for m in suite["models"]]
    for entry in suite["models"]:
        entry.setdefault("name", entry.get("model"))
        entry.setdefault("config", {})
        if not entry["name"]:
            raise RecBoleLLMError(f"{path}: every models entry needs `model`.")
    seeds = suite.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds)):
        raise RecBoleLLMError(f"{path}: `seeds` must be a list of integers.")
    suite["output"] = path.parent / suite.get("output", f"results/{suite['name']}")
    suite["file"] = path
    return suite


def _runs(suite: dict) -> list[tuple[dict, int | None]]:
    """(model entry, seed) pairs; seed None means the suite's own config decides."""
    return [(entry, seed) for entry in suite["models"] for seed in suite.get("seeds") or [None]]


def _record_path(suite: dict, name: str, spec: ProtocolSpec, seed: int | None) -> Path:
    suffix = "" if seed is None else f"__seed{seed}"
    return suite["output"] / f"{name}__{spec.label}{suffix}.json"


def _run_key(suite: dict, entry: dict, spec: ProtocolSpec, seed: int | None) -> str:
    model_class = get_model(entry["model"])
    key = {
        "dataset": suite["dataset"],
        "config": suite["config"],
        "entry": entry,
        "protocol": spec,
        "class": f"{model_class.__module__}.{model_class.__qualname__}",
    }
    if seed is not None:
        key["seed"] = seed
    return fingerprint(key)


def _is_done(suite: dict, entry: dict, seed: int | None) -> bool:
    for spec in suite["protocols"]:
        path = _record_path(suite, entry["name"], spec, seed)
        if not path.is_file():
            return False
        if json.loads(path.read_text()).get("run_key") != _run_key(suite, entry, spec, seed):
            return False
    return True


def _run_entry(suite: dict, entry: dict, seed: int | None) -> None:
    from recbole_llm.quick_start import evaluate, train

    config = {**suite["config"], **entry["config"], **({} if seed is None else {"seed": seed})}
    if config.get("data_path") and not Path(config["data_path"]).is_absolute():
        # Like `output`, relative to the suite file (resolved here so run keys stay machine-free).
        config["data_path"] = str((suite["file"].parent / config["data_path"]).resolve())
    # Candidate sets live beside the results, so that a rerun ranks exactly the same lists.
    config.setdefault("candidates_dir", str(suite["output"] / "candidates"))
    started = time.time()
    trained = train(entry["model"], suite["dataset"], None, config)
    result = evaluate(trained, suite["protocols"])
    for spec in suite["protocols"]:
        record = {
            "suite": suite["name"],
            "model": entry["name"],
            "model_class": f"{trained.config.model_class.__module__}.{trained.config.model_class.__name__}",
            "dataset": suite["dataset"],
            "protocol": {"label": spec.label, **jsonable(vars(spec))},
            "metrics": {k: float(v) for k, v in result.test[spec.label].items()},
            "best_valid": jsonable(trained.best_valid),
            "n_users": result.n_users[spec.label],
            "cost": result.reports.get(spec.label),
            "seed": trained.config["seed"],
            "epochs_run": trained.epochs_run,
            "wall_time": {
                "train_s": trained.train_seconds,
                "eval_s": result.eval_seconds[spec.label],
                "train_epoch_s": getattr(trained.trainer, "epoch_seconds", []),
            },
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "run_key": _run_key(suite, entry, spec, seed),
            "config": config_snapshot(trained.config),
            "versions": versions(),
            "machine": machine(),
        }
        path = _record_path(suite, entry["name"], spec, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")


def _provenance(suite: dict, records: list[dict]) -> str:
    if not records:
        return "No finished runs yet."
    seeds = sorted({r["seed"] for r in records})
    machine, versions = records[0]["machine"], records[0]["versions"]
    cpus = sorted({r["machine"].get("cpu", r["machine"]["processor"]) for r in records})
    return (
        f"Regenerate: `recbole-llm leaderboard {suite['file'].as_posix()}`. Dataset `{suite['dataset']}`, "
        f"leave-one-out split, seen items masked, ties broken against the model (docs/protocol.md); "
        f"seed(s) {', '.join(map(str, seeds))}. Machine: {machine['cpu_count']} CPU cores "
        f"({' / '.join(cpus)}), GPU: {machine['cuda'] or 'none'}. "
        + versions_text(versions)
        + ". Times in seconds; one JSON per run beside this file."
    )


def run_suite(
    path: str | Path, force: bool = False, only: list[str] | None = None, seeds: list[int] | None = None
) -> str:
    """Run what is missing (of `only` models and `seeds`, if given); write and return the table."""
    suite = load_suite(path)
    names = [e["name"] for e in suite["models"]]
    for name in only or []:
        if name not in names:
            raise RecBoleLLMError(f"Model {name!r} is not in the suite; it lists {names}.")
    for seed in seeds or []:
        if seed not in (suite.get("seeds") or []):
            raise RecBoleLLMError(f"Seed {seed} is not in the suite's seeds {suite.get('seeds')}.")
    for entry, seed in _runs(suite):
        if (only and entry["name"] not in only) or (seeds and seed not in seeds):
            continue
        if not force and _is_done(suite, entry, seed):
            continue
        _run_entry(suite, entry, seed)
    records = [
        json.loads(p.read_text())
        for spec in suite["protocols"]
        for entry, seed in _runs(suite)
        if (p := _record_path(suite, entry["name"], spec, seed)).is_file()
    ]
    table = f"## {suite['name']}\n\n{_provenance(suite, records)}\n\n"
    table += leaderboard(records, suite.get("columns", DEFAULT_COLUMNS))
    if suite.get("published"):
        table += "\n" + published_comparison(records, suite["published"], suite["protocols"][0].label)
    if suite.get("notes"):
        table += "\n" + suite["notes"].strip() + "\n"
    (suite["output"] / "leaderboard.md").write_text(table)
    return table
