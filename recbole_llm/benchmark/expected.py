"""Expected scores: a suite's committed numbers, with the command that regenerates each row, how far a
rerun may move it, and whether CI reruns it (tests/test_regression_baselines.py).

`<suite output>/expected.yaml` is written from the records beside it (`recbole-llm expected SUITE.yaml`),
never by hand: a test checks that it agrees with the records, so a table regenerated without its
expected file fails, and another reruns the cheap rows, so code that moves a committed number fails.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

EXPECTED_FILE = "expected.yaml"
# Datasets inside the recbole wheel: a rerun on them needs no download (`../shared/data`).
BUILT_IN_DATASETS = {"ml-100k"}
# LLM rankers, text encoders and pipelines (which train their stages inside one run, `epochs_run` 0):
# minutes per run and model weights to fetch, and bf16 or encoder kernels that differ between CPUs.
_NEURAL_PACKAGES = ("recbole_llm.models.llm.", "recbole_llm.models.retrieval.")
# Absolute tolerance of each metric, by how a row's numbers come about. Metrics are rounded to 4 decimals.
TOLERANCE = {
    # No training, no float model (Pop): exact counting. One rounding step, so a last-digit flip of the
    # summation order passes and a changed list or tie-break (>= 1/943 recall on ml-100k) fails.
    "exact": 1e-4,
    # Gradient training on CPU: the same seed, but float sums differ with thread count and CPU kernels,
    # and over many epochs early stopping may keep another epoch.
    "trained": 2e-3,
    # LLM and encoder rows: bf16/AMX or encoder kernels differ between CPUs; near-tied answers flip, and
    # one user of a 50-user row is 0.02 of NDCG@1.
    "neural": 2e-2,
}


def _neural(record: dict) -> bool:
    return record["model_class"].startswith(_NEURAL_PACKAGES)


def _kind(record: dict) -> str:
    """Which TOLERANCE applies to a record."""
    if _neural(record):
        return "neural"
    return "exact" if record["epochs_run"] == 0 else "trained"


def is_cheap(record: dict) -> bool:
    """Whether CI reruns a record: no LLM or encoder, at most one epoch, on a dataset of the wheel, and
    finished (an interim record tests a resume state that its training moves on from)."""
    small = record["dataset"] in BUILT_IN_DATASETS and record["epochs_run"] <= 1
    return small and not _neural(record) and not record.get("in_progress")


def suite_records(suite: dict) -> list[tuple[str, dict]]:
    """(file name, record) of every record of `suite` in its output folder, by file name.

    Other JSON there (a benchmark script's result, e.g. position_probe.json, which names the suite too)
    has no run key and is left out.
    """
    found = []
    for path in sorted(Path(suite["output"]).glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("suite") == suite["name"] and "run_key" in record:
            found.append((path.name, record))
    return found


def _suite_file(suite: dict) -> str:
    """The suite's path as commands give it: from the repository root (`benchmarks/ml-100k.yaml`)."""
    return f"{suite['file'].parent.name}/{suite['file'].name}"


def regenerate_command(suite: dict, record: dict) -> str:
    """The leaderboard command that reruns the row's model (for an interim record: that tests the
    training in progress again, from the resume state committed with it)."""
    args = ["recbole-llm", "leaderboard", _suite_file(suite)]
    args += ["--models", record["model"], "--test-progress" if record.get("in_progress") else "--force"]
    if suite.get("seeds"):
        args += ["--seeds", str(record["seed"])]
    return shlex.join(args)


def expected_row(suite: dict, file_name: str, record: dict) -> dict:
    return {
        "record": file_name,
        "model": record["model"],
        "protocol": record["protocol"]["label"],
        "seed": record["seed"],
        "cheap": is_cheap(record),
        "tolerance": TOLERANCE[_kind(record)],
        "lists_sha256": record["protocol"].get("lists_sha256"),  # absent from the oldest records
        "metrics": record["metrics"],
        "command": regenerate_command(suite, record),
    }


def expected_scores(suite: dict) -> dict:
    """The expected file's content, from the suite's records as they are now."""
    rows = [expected_row(suite, name, record) for name, record in suite_records(suite)]
    return {"suite": _suite_file(suite), "rows": rows}


def expected_path(suite: dict) -> Path:
    return Path(suite["output"]) / EXPECTED_FILE


def expected_command(suite: dict) -> str:
    return f"recbole-llm expected {_suite_file(suite)}"


def render(suite: dict, expected: dict) -> str:
    header = (
        f"# Written by `{expected_command(suite)}` from the records beside this file: do not edit.\n"
        "# tolerance: absolute, for each metric of the row; cheap rows are rerun by\n"
        "# tests/test_regression_baselines.py (benchmarks/README.md, Regression baselines).\n"
    )
    return header + yaml.safe_dump(expected, sort_keys=False, default_flow_style=None, width=110)


def write_expected(suite: dict) -> Path | None:
    """Write the suite's expected file; without records remove a stale one and return None."""
    path = expected_path(suite)
    expected = expected_scores(suite)
    if not expected["rows"]:
        path.unlink(missing_ok=True)
        return None
    path.write_text(render(suite, expected))
    return path


def load_expected(suite: dict) -> dict | None:
    path = expected_path(suite)
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _fields(row: dict) -> dict:
    """A row's values by field, each metric its own (`metrics.ndcg@10`), so a difference names it."""
    metrics = {f"metrics.{k}": v for k, v in row.get("metrics", {}).items()}
    return {**{k: v for k, v in row.items() if k != "metrics"}, **metrics}


def disagreements(committed: dict | None, fresh: dict) -> list[str]:
    """How a committed expected file differs from what the records give now, one line per field."""
    old = {r["record"]: _fields(r) for r in (committed or {}).get("rows", [])}
    new = {r["record"]: _fields(r) for r in fresh["rows"]}
    lines = [f"{name}: a record without an expected row" for name in new if name not in old]
    lines += [f"{name}: an expected row without a record" for name in old if name not in new]
    for name in new.keys() & old.keys():
        lines += [
            f"{name}: {k} is {old[name].get(k)} in {EXPECTED_FILE}, {new[name].get(k)} from the record"
            for k in old[name] | new[name]
            if old[name].get(k) != new[name].get(k)
        ]
    return sorted(lines)


def compare(row: dict, metrics: dict[str, float], lists_sha256: str | None) -> list[str]:
    """Why a rerun's numbers break `row`, one line per metric beyond tolerance (or changed lists)."""
    where = f"{row['record']} ({row['model']}, {row['protocol']}, seed {row['seed']})"
    lines = []
    if row["lists_sha256"] is not None and lists_sha256 != row["lists_sha256"]:
        changed = f"sha256 {lists_sha256} != committed {row['lists_sha256']}"
        lines.append(f"{where}: candidate lists changed: {changed}")
    for metric, committed in row["metrics"].items():
        new = metrics.get(metric)
        if new is None:
            lines.append(f"{where}: {metric} committed {committed}, missing from the rerun")
        elif abs(new - committed) > row["tolerance"] + 1e-12:  # 1e-12: binary floats of 4-decimal values
            lines.append(
                f"{where}: {metric} committed {committed}, now {new} "
                f"(|diff| {abs(new - committed):.4g} > tolerance {row['tolerance']})"
            )
    return lines
