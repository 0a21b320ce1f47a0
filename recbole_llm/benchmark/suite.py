"""Run a suite YAML: every listed model, trained once, tested on every listed protocol.

Each finished (model, protocol) run is written at once as one JSON file, so an interrupted suite
loses nothing; a rerun skips runs whose file was made from the same settings. Beside it, a gzipped JSON
holds each test user's metric values (records.per_user_path), for intervals and paired tests.

Suite format::

    name: ml-100k
    dataset: ml-100k
    config: {seed: 2020}               # shared by every run
    protocols: [{type: full}, {type: uniform, size: 20}]   # eval_users / seed: the run's unless set
    seeds: [2020, 2021, 2022]          # optional: every model once per seed; tables show mean ± 95% CI
    baseline: SASRec-CE                # optional: `*` marks significant differences from this model
    published:                         # optional: a paper's numbers, tabled next to ours
      source: Xu et al. 2024, Table 2
      SASRec-CE: {Recall@10: 0.0986, NDCG@10: 0.0597}
    reference_curves:                  # optional: grey lines in the learning-curve plot
      source: the paper code's own training log
      reference SASRec-CE: [[5, 0.0118], [10, 0.0154], [15, 0.0278]]   # [epoch, validation score]
    notes: text printed under the tables (budgets, deviations from the paper)
    models:
      - {model: Pop}
      - {model: SASRec, name: SASRec-CE, config: {epochs: 20}}
      - {model: LLMRanker, name: pairwise, protocols: [{type: uniform, size: 20, eval_users: 50}]}
      - {model: LLMListwiseRanker, name: listwise-SFT, config: {loss_type: sft}}
      - {model: LLMListwiseRanker, name: SFT first-label, adapter_from: listwise-SFT,
         config: {loss_type: sft, listwise_inference: first_label}}
    output: results/ml-100k            # relative to the suite file; candidate sets in output/candidates
    resume_dir: results/ml-100k/resume # optional, relative to the suite file: resume states of killed
                                       # runs (default saved/resume), e.g. committed between sessions
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from recbole_llm.atomic import write_atomic
from recbole_llm.benchmark.executors import EXECUTORS, resources, run_local, run_ray
from recbole_llm.benchmark.plots import write_plots
from recbole_llm.benchmark.records import (
    config_snapshot,
    fingerprint,
    jsonable,
    load_record,
    machine,
    per_user_path,
    versions,
    versions_text,
    write_per_user,
)
from recbole_llm.benchmark.table import DEFAULT_COLUMNS, leaderboard, published_comparison
from recbole_llm.config import Config
from recbole_llm.data.protocol import resolve_protocols
from recbole_llm.data.protocols import DEFAULT_SEED, Protocol, parse_protocol
from recbole_llm.errors import RecBoleLLMError, did_you_mean
from recbole_llm.evaluation.resume import progress, resume_path
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
    "baseline",
    "published",
    "reference_curves",
    "notes",
    "resources",
    "resume_dir",
}
# A model entry: `protocols` replaces the suite's for that model (e.g. fewer users for a costly one);
# `resources` (num_cpus, num_gpus) what one of its runs asks of the Ray executor; `adapter_from` names
# an earlier fine-tuned entry whose saved adapter this one tests untrained (another inference setting,
# without paying for the training again).
_ENTRY_KEYS = {"model", "name", "config", "protocols", "resources", "adapter_from"}


def load_suite(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecBoleLLMError(f"Suite file not found: {path}")
    suite = yaml.safe_load(path.read_text()) or {}
    if not isinstance(suite, dict):
        raise RecBoleLLMError(f"{path}: expected `key: value` pairs at the top level.")
    unknown = set(suite) - _SUITE_KEYS
    if unknown:
        raise RecBoleLLMError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(_SUITE_KEYS)}.")
    for key in ("dataset", "models"):
        if key not in suite:
            raise RecBoleLLMError(f"{path}: missing `{key}`.")
    suite.setdefault("name", path.stem)
    suite.setdefault("config", {})
    suite["protocols"] = suite.get("protocols") or ["full"]
    for block in suite["protocols"]:
        parse_protocol(block)  # fail on a malformed block now; bound to each run's config later
    suite["models"] = [{"model": m} if isinstance(m, str) else m for m in suite["models"]]
    for entry in suite["models"]:
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise RecBoleLLMError(
                f"{path}: unknown key(s) {sorted(unknown)} in the entry of {entry.get('model')}; "
                f"known: {sorted(_ENTRY_KEYS)}."
            )
        entry.setdefault("name", entry.get("model"))
        entry.setdefault("config", {})
        if not entry["name"]:
            raise RecBoleLLMError(f"{path}: every models entry needs `model`.")
        for block in entry.get("protocols") or []:
            parse_protocol(block)
    seeds = suite.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds)):
        raise RecBoleLLMError(f"{path}: `seeds` must be a list of integers.")
    _check_baseline(path, suite)
    _check_reference_curves(path, suite.get("reference_curves"))
    _check_adapter_from(path, suite)
    suite["output"] = path.parent / suite.get("output", f"results/{suite['name']}")
    if suite.get("resume_dir"):
        suite["resume_dir"] = path.parent / suite["resume_dir"]
    suite["file"] = path
    return suite


def _check_baseline(path: Path, suite: dict) -> None:
    """`baseline` must name a model entry: a typo would silently drop every significance mark."""
    baseline = suite.get("baseline")
    names = [e["name"] for e in suite["models"]]
    if baseline is not None and baseline not in names:
        hint = did_you_mean(str(baseline), names) or f" It lists {names}."
        raise RecBoleLLMError(f"{path}: baseline {baseline!r} is not a model name of the suite.{hint}")


def _check_reference_curves(path: Path, curves) -> None:
    """`reference_curves`: `source` (text) and label -> [[epoch, score], ...], drawn with the learning
    curves; checked here so that a typo fails before hours of training, not when the plot is drawn."""
    if curves is None:
        return
    lines = {k: v for k, v in curves.items() if k != "source"} if isinstance(curves, dict) else None

    def is_point(point) -> bool:
        return isinstance(point, list) and len(point) == 2 and all(isinstance(x, (int, float)) for x in point)

    if not lines or not all(isinstance(v, list) and v and all(map(is_point, v)) for v in lines.values()):
        raise RecBoleLLMError(
            f"{path}: `reference_curves` needs `label: [[epoch, score], ...]` entries (and may name a "
            "`source`)."
        )


def _check_adapter_from(path: Path, suite: dict) -> None:
    """`adapter_from` must name an earlier entry of the same fine-tuned model class: the suite runs its
    entries in order, and only a fine-tuned ranker saves an adapter the other can load."""
    for k, entry in enumerate(suite["models"]):
        source = entry.get("adapter_from")
        if source is None:
            continue
        earlier = {e["name"]: e for e in suite["models"][:k]}
        if source not in earlier:
            hint = did_you_mean(str(source), earlier) or f" Earlier entries: {list(earlier)}."
            raise RecBoleLLMError(
                f"{path}: {entry['name']!r} takes its adapter from {source!r}, which is not an earlier "
                f"entry of the suite.{hint}"
            )
        if earlier[source]["model"] != entry["model"] or not _fine_tuned(entry["model"]):
            raise RecBoleLLMError(
                f"{path}: adapter_from needs two entries of one fine-tuned ranker class; {entry['name']!r} "
                f"is {entry['model']} and {source!r} is {earlier[source]['model']}."
            )


def _fine_tuned(model: str) -> bool:
    from recbole_llm.models.llm.finetuned import FineTunedLLMRanker

    return issubclass(get_model(model), FineTunedLLMRanker)


def _runs(suite: dict) -> list[tuple[dict, int | None]]:
    """(model entry, seed) pairs; seed None means the suite's own config decides."""
    return [(entry, seed) for entry in suite["models"] for seed in suite.get("seeds") or [None]]


def _run_config(suite: dict, entry: dict, seed: int | None) -> dict:
    """The config dict of one run, as given to `train` (strict: a misspelled key fails the suite)."""
    config = {"strict": True, **suite["config"], **entry["config"]}
    if entry.get("adapter_from"):
        config["epochs"] = 0  # tested with the adapter its source entry trained (Run.adapter_from)
    if seed is not None:
        config["seed"] = seed
    if config.get("data_path") and not Path(config["data_path"]).is_absolute():
        # Like `output`, relative to the suite file (resolved here so run keys stay machine-free).
        config["data_path"] = str((suite["file"].parent / config["data_path"]).resolve())
    # Candidate sets live beside the results, so that a rerun ranks exactly the same lists.
    config.setdefault("candidates_dir", str(suite["output"] / "candidates"))
    if suite.get("resume_dir"):  # an output setting: not part of the run keys, as `output` is not
        config.setdefault("resume_dir", str(suite["resume_dir"]))
    return config


@dataclass
class Run:
    """One (model entry, seed) of a suite with its validated config and the protocols it is tested on.

    Protocols take the entry's `eval_users` but the suite's own seed, so that every seed of a model
    (and every model) ranks the same candidate lists. `adapter_from`: the run (same seed) whose saved
    adapter this one tests, for an entry with `adapter_from`.
    """

    entry: dict
    seed: int | None
    config: dict
    protocols: list[Protocol]
    adapter_from: Run | None = None


def plan(suite: dict) -> list[Run]:
    """Every run with its config checked (types, unknown keys, protocol vs model) before any training."""
    runs = []
    base_seed = suite["config"].get("seed", DEFAULT_SEED)
    for entry, seed in _runs(suite):
        config = _run_config(suite, entry, seed)
        resolved = Config(entry["model"], suite["dataset"], None, config)
        own = entry.get("protocols") or suite["protocols"]
        blocks = [parse_protocol(b, resolved["eval_users"], base_seed) for b in own]
        source = entry.get("adapter_from")
        linked = next((r for r in runs if r.entry["name"] == source and r.seed == seed), None)
        runs.append(Run(entry, seed, config, resolve_protocols(resolved, blocks), linked))
    return runs


def trained_adapter(suite: dict, run: Run) -> Path:
    """The adapter folder that fine-tuned `run` saved beside the checkpoint its record names."""
    from recbole_llm.models.llm.finetuned import adapter_folder

    path = _training_record(suite, run)
    if not path.is_file():
        raise RecBoleLLMError(f"No record {path}: run {describe(run)} first (recbole-llm leaderboard ...).")
    checkpoint = json.loads(path.read_text()).get("checkpoint")
    folder = checkpoint and adapter_folder(checkpoint, run.entry["model"])
    if not folder or not folder.is_dir():
        raise RecBoleLLMError(
            f"{path.name} names no saved adapter ({folder}): rerun {describe(run)} with --force."
        )
    return folder


def record_path(suite: dict, name: str, protocol: Protocol, seed: int | None) -> Path:
    """The JSON record of model `name` on `protocol` (and `seed`, when the suite lists seeds)."""
    suffix = "" if seed is None else f"__seed{seed}"
    return suite["output"] / f"{name}__{protocol.label}{suffix}.json"


def _training_record(suite: dict, run: Run) -> Path:
    """The record of `run`'s first protocol: it names the checkpoint (and adapter) the run trained."""
    return record_path(suite, run.entry["name"], run.protocols[0], run.seed)


def _run_key(suite: dict, run: Run, protocol: Protocol) -> str:
    model_class = get_model(run.entry["model"])
    key = {
        "dataset": suite["dataset"],
        "config": suite["config"],
        "entry": {k: v for k, v in run.entry.items() if k != "resources"},  # where it runs changes nothing
        "protocol": protocol.identity(),
        "class": f"{model_class.__module__}.{model_class.__qualname__}",
    }
    if run.seed is not None:
        key["seed"] = run.seed
    if run.adapter_from is not None:  # a retrained source makes this run stale too
        path = _training_record(suite, run.adapter_from)
        key["adapter_of"] = json.loads(path.read_text()).get("run_key") if path.is_file() else None
    return fingerprint(key)


def _missing(suite: dict, run: Run) -> str | None:
    """Why `run` must run ('no record', 'settings changed'), or None when all its records are current."""
    for protocol in run.protocols:
        path = record_path(suite, run.entry["name"], protocol, run.seed)
        if not path.is_file():
            return f"no record {path.name}"
        record = json.loads(path.read_text())
        if record.get("run_key") != _run_key(suite, run, protocol):
            return f"settings changed since {path.name}"
        if record.get("in_progress"):
            return f"{path.name} holds an unfinished training's best weights so far"
    return None


def rerun(suite: dict, name: str, seed: int, workdir: Path) -> dict[str, dict]:
    """Train and test the suite's model `name` (seed `seed`) as its leaderboard run did, away from the
    records: candidate lists are drawn afresh and checkpoints saved under `workdir`, so that a changed
    sampler shows in the lists' hash. Returns, per record file name, `metrics` and `lists_sha256`.
    """
    from recbole_llm.quick_start import evaluate, train

    elsewhere = {
        **suite,
        "output": workdir,
        "config": {**suite["config"], "checkpoint_dir": str(workdir / "saved")},
        "models": [e for e in suite["models"] if e["name"] == name],
    }
    # Without `seeds:` a suite's single run takes its seed from the config (Run.seed None).
    (run,) = [r for r in plan(elsewhere) if r.seed in (None, seed)]
    trained = train(run.entry["model"], suite["dataset"], None, run.config, protocols=run.protocols)
    result = evaluate(trained)
    return {
        record_path(suite, name, p, run.seed).name: {
            "metrics": {k: float(v) for k, v in result.test[p.label].items()},
            "lists_sha256": result.lists[p.label]["lists_sha256"],
        }
        for p in run.protocols
    }


def run_entry(suite: dict, run: Run, command: str | None = None) -> None:
    """Train and test one run and write its records (`command`: what started it, default this process)."""
    from recbole_llm.quick_start import train

    started = time.time()
    config, source, extra = run.config, run.adapter_from, {}
    if source is not None:
        config = {**config, "adapter_path": str(trained_adapter(suite, source))}
        extra["adapter_from"] = {"model": source.entry["name"], "adapter_path": config["adapter_path"]}
    trained = train(run.entry["model"], suite["dataset"], None, config, protocols=run.protocols)
    _test_and_record(suite, run, trained, started, command, extra)


def test_in_progress(suite: dict, run: Run, command: str | None = None) -> None:
    """Test the best weights so far of `run`'s unfinished training (its resume state) and write them as
    interim records: the table shows them marked, and rerunning the suite continues the training."""
    from recbole_llm.quick_start import train

    started = time.time()
    trained = train(
        run.entry["model"], suite["dataset"], None, run.config, protocols=run.protocols, in_progress=True
    )
    state = trained.trainer.resume_file
    interim = {"epochs_trained": trained.epochs_run, "resume_state": state.name}
    _test_and_record(
        suite, run, trained, started, command, {"in_progress": interim, "checkpoint": str(state)}
    )


def _test_and_record(
    suite: dict, run: Run, trained, started: float, command: str | None, extra: dict
) -> None:
    """Test `trained` on every protocol of `run` and write one record (and its per-user values) each."""
    from recbole_llm.quick_start import evaluate

    result = evaluate(trained)
    for protocol in run.protocols:
        label = protocol.label
        path = record_path(suite, run.entry["name"], protocol, run.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_per_user(per_user_path(path), result.per_user[label])
        record = {
            "suite": suite["name"],
            "model": run.entry["name"],
            "model_class": f"{trained.config.model_class.__module__}.{trained.config.model_class.__name__}",
            "dataset": suite["dataset"],
            "protocol": {"label": label, **jsonable(protocol.identity()), **result.lists[label]},
            "metrics": {k: float(v) for k, v in result.test[label].items()},
            "best_valid": jsonable(trained.best_valid),
            "valid_curve": getattr(trained.trainer, "valid_curve", []),  # [[epochs trained, score], ...]
            "n_users": result.n_users[label],
            "per_user_file": per_user_path(path).name,
            "cost": result.reports.get(label),
            "seed": trained.config["seed"],
            "epochs_run": trained.epochs_run,
            "checkpoint": getattr(trained.trainer, "saved_model_file", None),  # the tested weights
            "wall_time": {
                "train_s": trained.train_seconds,
                "eval_s": result.eval_seconds[label],
                "train_epoch_s": getattr(trained.trainer, "epoch_seconds", []),
            },
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "run_key": _run_key(suite, run, protocol),
            "config": config_snapshot(trained.config),
            "versions": versions(),
            "machine": machine(),
            **extra,
        }
        _keep_measured_cost(path, record)
        write_atomic(path, json.dumps(record, indent=2) + "\n")


def _keep_measured_cost(path: Path, record: dict) -> None:
    """A rerun answered wholly from the LLM cache measured no LLM time: it keeps the cost and evaluation
    time that the record it replaces measured for the same run, and says which run measured them."""
    cost = record["cost"] or {}
    if not path.is_file() or not cost.get("requests") or cost.get("misses", 1):
        return
    old = json.loads(path.read_text())
    if old.get("run_key") != record["run_key"] or not (old.get("cost") or {}).get("misses"):
        return
    record["cost"], record["wall_time"]["eval_s"] = old["cost"], old["wall_time"]["eval_s"]
    record["cost_measured_by"] = old.get("cost_measured_by") or {
        "started_at": old["started_at"],
        "command": old["command"],
    }


def describe(run: Run) -> str:
    """A run as the messages name it: the model entry's name, and its seed where the suite lists seeds."""
    return run.entry["name"] + ("" if run.seed is None else f" (seed {run.seed})")


def _in_progress(suite: dict, runs: list[Run]) -> list[str]:
    """One line per run whose records are missing or stale but whose killed training left a resume state."""
    found = []
    for run in runs:
        if _missing(suite, run) is None:
            continue
        state, config = _resume_state(suite, run)
        if state.is_file():
            found.append(f"{describe(run)}: {progress(state, config['valid_metric'])}")
    return found


def _resume_state(suite: dict, run: Run) -> tuple[Path, Config]:
    """Where a killed training of `run` left its resume state (the file may not exist); its config."""
    config = Config(run.entry["model"], suite["dataset"], None, run.config)
    return resume_path(config, config.model_class), config


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
    path: str | Path,
    force: bool = False,
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    executor: str = "local",
    address: str | None = None,
    table_only: bool = False,
    test_progress: bool = False,
) -> str:
    """Run what is missing (of `only` models and `seeds`, if given) with `executor` (`local`, or `ray`
    on the cluster at `address`); write and return the table.

    Says on stderr, for each run, whether it was kept (its records match its settings) or why it runs.
    `table_only` runs nothing: it says what would run and writes the table from the records there are
    (with the runs in progress), e.g. to look at a long schedule between its sessions.
    `test_progress` trains nothing: it tests the best weights so far of each missing run that has a
    resume state and writes them as interim records, which the table marks and a later run replaces.
    """
    if executor not in EXECUTORS:
        raise RecBoleLLMError(f"Unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}.")
    suite = load_suite(path)
    names = [e["name"] for e in suite["models"]]
    for name in only or []:
        if name not in names:
            raise RecBoleLLMError(f"Model {name!r} is not in the suite; it lists {names}.")
    for seed in seeds or []:
        if seed not in (suite.get("seeds") or []):
            raise RecBoleLLMError(f"Seed {seed} is not in the suite's seeds {suite.get('seeds')}.")
    runs, missing = plan(suite), []
    for run in runs:
        resources(suite, run.entry)  # a typo in `resources` fails before anything runs
        if (only and run.entry["name"] not in only) or (seeds and run.seed not in seeds):
            continue
        reason = "--force" if force else _missing(suite, run)
        if reason is None:
            print(f"kept {describe(run)}: its records match its settings", file=sys.stderr)
            continue
        missing.append((run, reason))
    if table_only:
        for run, reason in missing:
            print(f"would run {describe(run)}: {reason}", file=sys.stderr)
        return _write_table(suite, runs)
    if test_progress:
        for run, _ in missing:
            if _resume_state(suite, run)[0].is_file():
                print(f"testing {describe(run)} as it stands (training in progress)", file=sys.stderr)
                test_in_progress(suite, run)
            else:
                print(f"skipped {describe(run)}: no training in progress", file=sys.stderr)
        return _write_table(suite, runs)
    # A run testing another's adapter waits for that run (Ray finishes tasks in any order).
    pending = {id(run) for run, _ in missing}
    waves = [
        [(run, why) for run, why in missing if (id(run.adapter_from) in pending) == later]
        for later in (False, True)
    ]
    failures = []
    for wave in filter(None, waves):
        failures += run_ray(suite, wave, address) if executor == "ray" else run_local(suite, wave)
    table = _write_table(suite, runs)
    if failures:
        raise RecBoleLLMError(
            f"{len(failures)} run(s) failed (the table holds the others): " + "; ".join(failures)
        )
    return table


def _write_table(suite: dict, runs: list[Run]) -> str:
    records = [
        load_record(p)
        for run in runs
        for protocol in run.protocols
        if (p := record_path(suite, run.entry["name"], protocol, run.seed)).is_file()
    ]
    suite["output"].mkdir(parents=True, exist_ok=True)  # a table even when every run failed
    columns = suite.get("columns", DEFAULT_COLUMNS)
    first_label = runs[0].protocols[0].label
    plots = write_plots(
        records, suite["output"], columns, suite.get("published"), first_label, suite.get("reference_curves")
    )
    table = f"## {suite['name']}\n\n{_provenance(suite, records)}\n\n"
    table += leaderboard(records, columns, suite.get("baseline"), plots.tables)
    table += "".join(f"\n{line}\n" for line in plots.after_tables)
    if suite.get("published"):
        table += "\n" + published_comparison(records, suite["published"], first_label)
        table += f"\n{plots.published}\n" if plots.published else ""
    unfinished = _in_progress(suite, runs)
    if unfinished:
        table += (
            "\n**In progress** (resume states; rerunning the suite continues them): "
            + "; ".join(unfinished)
            + ".\n"
        )
    if suite.get("notes"):
        table += "\n" + suite["notes"].strip() + "\n"
    (suite["output"] / "leaderboard.md").write_text(table)
    return table
