"""Regression baselines: code must not move a committed number unnoticed.

Every suite with records has `<output>/expected.yaml` (recbole_llm.benchmark.expected); it must agree with
the records, and its cheap rows (Pop on ml-100k, one SASRec epoch) must reproduce within tolerance, on
candidate lists drawn afresh with the committed hash. ~40 s on one thread. Every committed table must be
the one its records render.
"""

import copy
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from recbole_llm.benchmark.expected import (
    EXPECTED_FILE,
    compare,
    disagreements,
    expected_command,
    expected_scores,
    load_expected,
)
from recbole_llm.benchmark.suite import _write_table, load_suite, plan, rerun, run_suite
from recbole_llm.cli import main

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SUITES = [load_suite(path) for path in sorted(BENCHMARKS.glob("*.yaml"))]


def cheap_runs() -> list:
    """(suite, rows) per training run of the committed cheap rows: one rerun tests all its protocols."""
    runs: dict[tuple, tuple[dict, list]] = {}
    for suite in SUITES:
        for row in (load_expected(suite) or {}).get("rows", []):
            if row["cheap"]:
                runs.setdefault((suite["name"], row["model"], row["seed"]), (suite, []))[1].append(row)
    return [pytest.param(*run, id=f"{name}:{model}") for (name, model, _), run in runs.items()]


@pytest.mark.parametrize("suite", SUITES, ids=lambda suite: suite["name"])
def test_expected_file_agrees_with_the_records(suite):
    fresh = expected_scores(suite)
    committed = load_expected(suite)
    how = f"run `{expected_command(suite)}` and commit it with the records"
    if not fresh["rows"]:
        assert committed is None, f"{fresh['suite']} has no records but an {EXPECTED_FILE}: {how}."
        return
    lines = disagreements(committed, fresh)
    if lines:
        message = f"The {EXPECTED_FILE} of {fresh['suite']} disagrees with its records; {how}:\n"
        pytest.fail(message + "\n".join(lines), pytrace=False)


@pytest.mark.parametrize("suite", SUITES, ids=lambda suite: suite["name"])
def test_committed_table_is_the_one_its_records_render(suite, tmp_path):
    """A table edited by hand, or left behind when its YAML's notes or the table code changed, fails.
    Runs in progress are this machine's resume states, not the records': they are left out."""
    committed = suite["output"] / "leaderboard.md"
    if not committed.is_file():
        return
    # As rendered in the repository's root: the table names its suite file by that relative path.
    copied = {**suite, "output": tmp_path / "out", "file": Path("benchmarks", suite["file"].name)}
    shutil.copytree(suite["output"], copied["output"])
    rendered = _write_table(copied, plan(copied))
    in_progress = re.compile(r"\n\*\*In progress\*\*[^\n]*\n")
    assert in_progress.sub("", rendered) == in_progress.sub("", committed.read_text()), (
        f"{committed} is not what its records render: `recbole-llm leaderboard {suite['file'].as_posix()} "
        "--table-only` rewrites it"
    )


def test_cheap_rows_cover_pop_and_one_sasrec_epoch():
    """A rule change that left nothing cheap would pass the regression test vacuously."""
    rerun_models = {(rows[0]["model"], suite["name"]) for suite, rows in (p.values for p in cheap_runs())}
    assert ("Pop", "ml-100k") in rerun_models and ("SASRec-1epoch", "ml-100k-canary") in rerun_models


@pytest.fixture
def one_thread():
    """The canary was recorded on one thread: the same float sums, and no contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("suite", "rows"), cheap_runs())
def test_cheap_rows_reproduce(suite, rows, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)  # RecBole writes log/ into the working directory
    got = rerun(suite, rows[0]["model"], rows[0]["seed"], tmp_path)
    lines = []
    for row in rows:
        if row["record"] in got:
            lines += compare(row, **got[row["record"]])
        else:
            lines.append(f"{row['record']}: the suite no longer runs this protocol")
    if lines:
        pytest.fail(
            f"Code moved committed numbers of {suite['name']} beyond tolerance. If intended, regenerate the "
            f"table (`{rows[0]['command']}`) and then `{expected_command(suite)}`:\n" + "\n".join(lines),
            pytrace=False,
        )


def committed_pop_row() -> dict:
    suite = next(s for s in SUITES if s["name"] == "ml-100k")
    return next(r for r in load_expected(suite)["rows"] if r["record"] == "Pop__full.json")


def test_compare_names_row_metric_committed_and_new_value_and_tolerance():
    row = committed_pop_row()
    metrics = dict(row["metrics"])
    assert compare(row, metrics, row["lists_sha256"]) == []
    metrics["ndcg@10"] = row["metrics"]["ndcg@10"] + 1e-4  # one rounding step: within tolerance
    assert compare(row, metrics, row["lists_sha256"]) == []
    metrics["ndcg@10"] = 0.0442  # e.g. a changed tie-break
    assert compare(row, metrics, row["lists_sha256"]) == [
        "Pop__full.json (Pop, full, seed 2020): ndcg@10 committed 0.0432, now 0.0442 "
        "(|diff| 0.001 > tolerance 0.0001)"
    ]
    del metrics["ndcg@10"]
    lines = compare(row, metrics, "0" * 64)
    assert lines[0].endswith(f"candidate lists changed: sha256 {'0' * 64} != committed {row['lists_sha256']}")
    assert lines[1].endswith("ndcg@10 committed 0.0432, missing from the rerun")


def test_disagreements_name_each_stale_row():
    suite = next(s for s in SUITES if s["name"] == "ml-100k")
    fresh = expected_scores(suite)
    committed = copy.deepcopy(fresh)
    first, second = committed["rows"][:2]
    first["metrics"]["ndcg@10"] = 0.5
    second["cheap"] = not second["cheap"]
    dropped = committed["rows"].pop()
    assert disagreements(committed, fresh) == sorted(
        [
            f"{first['record']}: metrics.ndcg@10 is 0.5 in expected.yaml, "
            f"{fresh['rows'][0]['metrics']['ndcg@10']} from the record",
            f"{second['record']}: cheap is {second['cheap']} in expected.yaml, "
            f"{not second['cheap']} from the record",
            f"{dropped['record']}: a record without an expected row",
        ]
    )
    assert disagreements(None, fresh)[0].endswith("a record without an expected row")


def test_expected_command_writes_rows_from_records_and_removes_a_stale_file(tiny, tmp_path, capsys):
    body = {
        "name": "tiny-board",
        "dataset": "tiny",
        "config": {k: v for k, v in tiny.items() if k != "candidates_dir"},
        "protocols": [{"type": "full"}, {"type": "uniform", "size": 6}],
        "models": [{"model": "Pop"}],
        "output": "out",
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(body))
    assert main(["expected", str(path)]) == 0
    assert "no records, no expected file" in capsys.readouterr().out
    run_suite(path)
    assert main(["expected", str(path)]) == 0
    written = yaml.safe_load((tmp_path / "out" / EXPECTED_FILE).read_text())
    assert [r["record"] for r in written["rows"]] == ["Pop__full.json", "Pop__uniform6-s2020.json"]
    row = written["rows"][1]
    assert row["cheap"] is False, "tiny is not a dataset of the recbole wheel"
    assert row["tolerance"] == 1e-4 and len(row["lists_sha256"]) == 64 and 0 <= row["metrics"]["ndcg@10"] <= 1
    assert row["command"] == f"recbole-llm leaderboard {tmp_path.name}/suite.yaml --models Pop --force"
    for record in (tmp_path / "out").glob("*.json"):
        record.unlink()
    main(["expected", str(path)])
    assert not (tmp_path / "out" / EXPECTED_FILE).exists()
