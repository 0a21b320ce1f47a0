import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from recbole_llm.benchmark import suite as suite_module
from recbole_llm.benchmark.records import load_record
from recbole_llm.benchmark.suite import run_suite
from recbole_llm.benchmark.table import DEFAULT_COLUMNS
from recbole_llm.errors import RecBoleLLMError


def write_suite(tmp_path, tiny, **extra):
    body = {
        "name": "tiny-board",
        "dataset": "tiny",
        "config": {
            **{k: v for k, v in tiny.items() if k != "candidates_dir"},
            "openai_api_key": "sk-secret-value",
            "strict": False,  # suites run strict by default; this key is unknown on purpose
        },
        "protocols": [{"type": "full"}, {"type": "uniform", "size": 6}],
        "models": [{"model": "Pop"}, {"model": "BPR", "name": "BPR-small", "config": {"epochs": 2}}],
        "output": "out",
        **extra,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def assert_per_user_file_matches_the_metrics(folder, record):
    """The record's per-user file: one value per test user and metric, averaging to the metric."""
    assert record["per_user_file"] == record["model"] + "__" + record["protocol"]["label"] + ".users.json.gz"
    per_user = load_record(folder / (record["per_user_file"][: -len(".users.json.gz")] + ".json"))["per_user"]
    assert len(per_user["users"]) == len(set(per_user["users"])) == record["n_users"]
    assert set(per_user["values"]) == set(record["metrics"])
    for metric, values in per_user["values"].items():
        assert len(values) == record["n_users"]
        assert statistics.fmean(values) == pytest.approx(record["metrics"][metric], abs=5e-5 + 5e-7)


def test_suite_writes_one_record_per_run_and_a_table(tiny, tmp_path, monkeypatch, capsys):
    table = run_suite(write_suite(tmp_path, tiny, baseline="Pop"))
    files = sorted(p.name for p in (tmp_path / "out").glob("*.json"))
    expected = ["BPR-small__full.json", "BPR-small__uniform6-s2020.json", "Pop__full.json"]
    expected.append("Pop__uniform6-s2020.json")
    assert files == expected
    record = json.loads((tmp_path / "out" / "BPR-small__uniform6-s2020.json").read_text())
    assert record["protocol"]["size"] == 6 and record["n_users"] == 12
    assert record["epochs_run"] == 2 and record["seed"] == 2020
    assert {"recbole", "torch", "python"} <= set(record["versions"])
    assert record["machine"]["cpu_count"] >= 1 and record["wall_time"]["train_s"] > 0
    assert 0 <= record["metrics"]["ndcg@10"] <= 1
    assert record["config"]["openai_api_key"] == "<redacted>"
    assert "sk-secret-value" not in (tmp_path / "out" / "BPR-small__uniform6-s2020.json").read_text()
    assert "### uniform6-s2020 (12 test users; lists sha256 `" in table and "| BPR-small |" in table
    pop = json.loads((tmp_path / "out" / "Pop__uniform6-s2020.json").read_text())
    assert pop["protocol"]["lists_sha256"] == record["protocol"]["lists_sha256"], "one set of lists"
    assert (tmp_path / "out" / "leaderboard.md").read_text() == table
    assert_per_user_file_matches_the_metrics(tmp_path / "out", record)
    bpr_row = next(line for line in table.split("### uniform6")[1].splitlines() if line.startswith("| BPR"))
    assert " ± " in bpr_row.split(" | ")[1], "one run: an interval over its users"
    assert "Significance: `*` marks p < 0.05 against Pop, two-sided Wilcoxon signed-rank" in table
    assert len(list((tmp_path / "out" / "candidates" / "tiny").glob("uniform6-*.tsv"))) == 1

    # A rerun with the same settings trains nothing; a changed model config reruns only that model.
    calls = []
    monkeypatch.setattr(suite_module, "run_entry", lambda suite, run: calls.append(run.entry["name"]))
    capsys.readouterr()
    run_suite(write_suite(tmp_path, tiny))
    assert calls == []
    assert "kept Pop: its records match its settings" in capsys.readouterr().err
    run_suite(write_suite(tmp_path, tiny, models=[{"model": "Pop"}, {"model": "BPR", "name": "BPR-small"}]))
    assert calls == ["BPR-small"]
    assert "running BPR-small: settings changed since BPR-small__full.json" in capsys.readouterr().err


def test_bad_suites_fail_clearly(tiny, tmp_path):
    with pytest.raises(RecBoleLLMError, match="unknown key"):
        run_suite(write_suite(tmp_path, tiny, extra_key=1))
    with pytest.raises(RecBoleLLMError, match="not in the suite"):
        run_suite(write_suite(tmp_path, tiny), only=["SASRec"])
    with pytest.raises(RecBoleLLMError, match="Suite file not found"):
        run_suite(tmp_path / "none.yaml")
    typo = r"baseline 'BPR-smal' is not a model name of the suite. Did you mean: BPR-small\?"
    with pytest.raises(RecBoleLLMError, match=typo):
        run_suite(write_suite(tmp_path, tiny, baseline="BPR-smal"))
    for curves in ({"source": "a log"}, {"CE": [[5, 0.1], [10]]}, [[5, 0.1]]):
        with pytest.raises(RecBoleLLMError, match="reference_curves"):
            run_suite(write_suite(tmp_path, tiny, reference_curves=curves))


def test_seeds_run_each_model_per_seed_and_average(tiny, tmp_path):
    path = write_suite(tmp_path, tiny, seeds=[1, 2], models=[{"model": "BPR", "config": {"epochs": 2}}])
    table = run_suite(path)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("BPR__full__seed*.json"))]
    assert [r["seed"] for r in records] == [1, 2]
    values = [r["metrics"]["ndcg@10"] for r in records]
    mean = sum(values) / 2
    low, high = stats.t.interval(0.95, 1, loc=mean, scale=stats.sem(values))
    row = next(line for line in table.splitlines() if line.startswith("| BPR |"))
    assert f"{mean:.4f} ± {(high - low) / 2:.4f}" in row
    assert row.split(" | ")[len(DEFAULT_COLUMNS) + 1] == "2", "runs column"
    with pytest.raises(RecBoleLLMError, match="Seed 3 is not in the suite"):
        run_suite(path, seeds=[3])


def test_every_committed_suite_parses_and_names_known_models():
    from recbole_llm.benchmark.suite import load_suite
    from recbole_llm.registry import get_model

    suites = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.yaml"))
    assert suites
    for path in suites:
        suite = load_suite(path)
        for entry in suite["models"]:
            get_model(entry["model"])


def test_published_numbers_are_tabled_with_relative_gaps():
    from recbole_llm.benchmark.table import published_comparison

    def record(model, ndcg, seed):
        return {
            "model": model,
            "protocol": {"label": "full"},
            "metrics": {"ndcg@10": ndcg},
            "epochs_run": 10,
            "wall_time": {"train_s": 100.0},
            "seed": seed,
        }

    records = [record("CE", 0.05, 1), record("CE", 0.07, 2), record("BCE", 0.03, 1)]
    published = {"source": "Paper, Table 2", "CE": {"NDCG@10": 0.0600}, "BCE": {"NDCG@10": 0.0400}}
    table = published_comparison(records, published, "full")
    assert "published: Paper, Table 2" in table
    rows = {line.split(" | ")[0]: line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert rows["| CE"][1:4] == ["0.0600", "0.0600 ± 0.1271", "+0%"]  # t(0.975, 1) = 12.706 x 0.01
    assert rows["| BCE"][1:4] == ["0.0400", "0.0300", "-25%"]
    assert rows["| CE"][4] == "2", "seeds column"


def test_llm_cost_columns_appear_only_when_a_run_reports_cost():
    from recbole_llm.benchmark.table import leaderboard

    def record(model, cost):
        return {
            "model": model,
            "protocol": {"label": "uniform20"},
            "n_users": 200,
            "metrics": {c.lower(): 0.5 for c in DEFAULT_COLUMNS},
            "epochs_run": 0,
            "wall_time": {"train_s": 0.0, "eval_s": 1.0},
            "cost": cost,
        }

    plain = leaderboard([record("Pop", None)])
    assert "parse fail" not in plain
    cost = {"parse_failure_rate": 0.125, "seconds_per_user": 1.75, "tokens_per_user": 600.0}
    table = leaderboard([record("Pop", None), record("LLMRanker", cost)])
    rows = {line.split(" | ")[0]: line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    n = len(DEFAULT_COLUMNS)
    assert rows["| LLMRanker"][n + 1 : n + 4] == ["0.125", "1.8", "600.0"]
    assert rows["| Pop"][n + 1 : n + 4] == ["–", "–", "–"]
    assert "retriever recall" not in table

    two_stage = {"seconds_per_user": 0.5, "retriever_recall@20": 0.3125}
    table = leaderboard([record("Pop", None), record("TwoStage", two_stage)])
    rows, column = rows_of(table), header_of(table).index("retriever recall@20")
    assert rows["TwoStage"][column] == "0.3125"
    assert rows["Pop"][column] == "–"

    assert "AUC" not in table
    table = leaderboard(
        [record("Pop", None), record("pointwise-FT", {"seconds_per_user": 2.0, "auc": 0.61875})]
    )
    rows, at = rows_of(table), header_of(table).index("AUC")
    assert rows["pointwise-FT"][at] == "0.6188"
    assert rows["Pop"][at] == "–"


def test_redaction_hides_credentials_but_keeps_token_budgets():
    from recbole_llm.benchmark.records import redact

    config = {"hf_token": "x", "token": "x", "client_secret": "x", "OPENAI_API_KEY": "x"}
    config["db"] = {"password": "x"}
    kept = {"max_new_tokens": 120, "tokens_per_user": 600, "llm_api_key_env": "OPENAI_API_KEY"}
    out = redact({**config, **kept})
    assert all(out[k] == "<redacted>" for k in ("hf_token", "token", "client_secret", "OPENAI_API_KEY"))
    assert out["db"] == {"password": "<redacted>"}
    assert {k: out[k] for k in kept} == kept


def test_a_table_never_mixes_runs_that_ranked_different_lists():
    from recbole_llm.benchmark.table import leaderboard

    def record(model, lists):
        return {
            "model": model,
            "protocol": {"label": "uniform20-s2020", "lists_sha256": lists, "set_sha256": lists},
            "n_users": 200,
            "metrics": {c.lower(): 0.5 for c in DEFAULT_COLUMNS},
            "epochs_run": 0,
            "wall_time": {"train_s": 0.0, "eval_s": 1.0},
        }

    same = leaderboard([record("A", "aa" * 32), record("B", "aa" * 32)])
    assert same.count("### ") == 1 and "DIFFERENT LISTS" not in same
    mixed = leaderboard([record("A", "aa" * 32), record("B", "bb" * 32)])
    tables = mixed.split("### ")[1:]
    assert len(tables) == 2 and all("DIFFERENT LISTS" in t for t in tables)
    assert "| A |" in tables[0] and "| B |" not in tables[0] and "| B |" in tables[1]


NDCG_VALUES = [0.0, 0.25, 0.5, 0.75, 1.0]  # exact in binary: seed means of equal values stay equal


def test_a_run_under_a_training_budget_shows_its_examples_and_seconds_per_example():
    from recbole_llm.benchmark.table import leaderboard

    def record(model, budget, batch, epoch_s):
        return {
            "model": model,
            "protocol": {"label": "uniform20"},
            "n_users": 100,
            "metrics": {"ndcg@10": 0.5},
            "epochs_run": len(epoch_s),
            "wall_time": {"train_s": sum(epoch_s), "eval_s": 1.0, "train_epoch_s": epoch_s},
            "config": {"train_examples_per_epoch": budget, "train_batch_size": batch},
        }

    assert "s/example" not in leaderboard([record("SASRec", None, 128, [10.0])], columns=["NDCG@10"])
    # 100 rows in batches of 8 are 13 batches, 104 rows an epoch: 208 in two epochs of 52 and 104 s.
    # A row testing another row's adapter (adapter_from) keeps the budget in its config but trains nothing.
    table = leaderboard(
        [
            record("SASRec", None, 128, [10.0]),
            record("verbalizer-FT", 100, 8, [52.0, 104.0]),
            record("verbalizer-FT first-label", 100, 8, []),
        ],
        columns=["NDCG@10"],
    )
    rows, at = rows_of(table), header_of(table).index("examples")
    assert rows["verbalizer-FT"][at : at + 2] == ["208", "0.75"]
    assert rows["SASRec"][at : at + 2] == ["–", "–"]
    assert rows["verbalizer-FT first-label"][at : at + 2] == ["–", "–"]


def user_record(model, users, values, seed=2020):
    """A record of one run on 'uniform20' with per-user NDCG@10 values."""
    return {
        "model": model,
        "protocol": {"label": "uniform20", "lists_sha256": "aa" * 32},
        "n_users": len(users),
        "metrics": {"ndcg@10": round(statistics.fmean(values), 4)},
        "epochs_run": 1,
        "wall_time": {"train_s": 1.0, "eval_s": 1.0},
        "seed": seed,
        "per_user": {"users": list(users), "values": {"ndcg@10": [float(v) for v in values]}},
    }


def rows_of(table):
    lines = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")]
    return {cells[0][2:]: cells for cells in lines}


def header_of(table):
    """The column titles of a table's header, indexed as `rows_of` cells are."""
    return next(line for line in table.splitlines() if line.startswith("| model")).split(" | ")


def test_a_clearly_better_model_is_marked_and_an_identical_one_is_not():
    from recbole_llm.benchmark.table import leaderboard

    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(200)]
    base = np.tile(NDCG_VALUES, 40)
    better = np.where(rng.random(200) < 0.4, 1.0, base)  # 40% of users move to rank 1, none lose
    # The same values listed in another user order: paired by position they would differ by
    # +0.25, +0.25, +0.25, +0.25, -1 in every block of 5, a significant signed-rank sum.
    order = [5 * (i // 5) + (i + 1) % 5 for i in range(200)]
    records = [
        user_record("Base", users, base),
        user_record("Better", users, better),
        user_record("Same", [users[i] for i in order], base[order]),
    ]
    table = leaderboard(records, ("NDCG@10",), baseline="Base")
    rows = rows_of(table)
    assert rows["Better"][1].endswith(" *")
    assert "*" not in rows["Same"][1].replace("**", "") and "*" not in rows["Base"][1].replace("**", "")
    assert "against Base, two-sided Wilcoxon signed-rank test of per-user values over 200 users" in table
    assert "not tested" not in table

    # One run: ± is the t interval of its users' values.
    mean = statistics.fmean(base)
    low, high = stats.t.interval(0.95, 199, loc=mean, scale=stats.sem(base))
    assert rows["Same"][1] == f"{round(mean, 4):.4f} ± {(high - low) / 2:.4f}"
    assert "over the users' per-user values of a single run" in table


def test_with_seeds_each_users_mean_over_seeds_is_paired():
    from recbole_llm.benchmark.table import leaderboard

    rng = np.random.default_rng(1)
    users = [f"u{i}" for i in range(100)]
    b1, b2 = rng.choice(NDCG_VALUES, size=100), rng.choice(NDCG_VALUES, size=100)
    records = [
        user_record("Base", users, b1, seed=1),
        user_record("Base", users, b2, seed=2),
        # Far above the baseline in seed 1 and as far below in seed 2: the same mean for every user.
        user_record("Swing", users, b1 + 0.5, seed=1),
        user_record("Swing", users, b2 - 0.5, seed=2),
        user_record("Up", users, b1 + 0.25, seed=1),
        user_record("Up", users, b2 + 0.25, seed=2),
    ]
    table = leaderboard(records, ("NDCG@10",), baseline="Base")
    rows = rows_of(table)
    assert rows["Up"][1].endswith(" *") and not rows["Swing"][1].endswith(" *")
    assert "(each user's mean over a row's seeds)" in table
    seeds = [records[0]["metrics"]["ndcg@10"], records[1]["metrics"]["ndcg@10"]]
    mean = statistics.fmean(seeds)
    low, high = stats.t.interval(0.95, 1, loc=mean, scale=stats.sem(seeds))
    assert rows["Base"][1] == f"{mean:.4f} ± {(high - low) / 2:.4f}"


def test_records_without_per_user_values_render_without_intervals_or_marks():
    """Records written before per-user values were kept: plain means, no interval, no mark."""
    from recbole_llm.benchmark.table import leaderboard

    def old_record(model, values):
        return {
            k: v for k, v in user_record(model, ["u1", "u2", "u3", "u4"], values).items() if k != "per_user"
        }

    records = [old_record("Base", [0.0, 0.0, 0.25, 0.25]), old_record("A", [1.0, 1.0, 0.75, 1.0])]
    table = leaderboard(records, ("NDCG@10",), baseline="Base")
    rows = rows_of(table)
    assert (rows["Base"][1], rows["A"][1]) == ("0.1250", "**0.9375**")
    assert table.count("Intervals: none; every row is a single run") == 1
    assert table.count("Significance: no `*`; the baseline Base has no per-user values") == 1

    # Mixed with a new record, the old rows stay unmarked and are named as untested.
    new = user_record("New", ["u1", "u2"], [0.0, 1.0])
    table = leaderboard([new, *records], ("NDCG@10",), baseline="New")
    assert "not tested (no per-user values on the same users): Base, A" in table
    assert "none for a single run without per-user values" in table
    assert not any(line.endswith(" * |") for line in table.splitlines())


def test_a_baseline_that_ranked_other_lists_marks_nothing():
    from recbole_llm.benchmark.table import leaderboard

    users = [f"u{i}" for i in range(50)]
    other = user_record("Base", users, [1.0] * 50)
    other["protocol"] = {"label": "full", "lists_sha256": None}
    table = leaderboard([other, user_record("A", users, [0.0] * 50)], ("NDCG@10",), baseline="Base")
    uniform = table.split("### uniform20")[1]
    assert "Significance: no `*`; the baseline Base did not rank these lists." in uniform
    assert not rows_of(uniform)["A"][1].endswith(" *")


def test_a_failed_run_is_reported_by_its_error_type_and_last_message_line():
    from recbole_llm.benchmark.executors import failure_line

    assert (
        failure_line(ValueError("Traceback ...\n  File x\nKeyError: 'title'\n"))
        == "ValueError: KeyError: 'title'"
    )
    assert failure_line(MemoryError()) == "MemoryError"  # no message: the type alone, not an IndexError
    assert failure_line(RuntimeError("  \n ")) == "RuntimeError"


def test_a_rerun_answered_from_the_llm_cache_keeps_the_cost_its_first_run_measured(tiny, tmp_path):
    """Rerunning a suite to add what records lack (per-user values) reads the LLM's answers from the
    cache; the cost columns keep what asking the LLM cost, not the near-zero time of reading answers."""
    pytest.importorskip("transformers")
    from tests.llm_fixtures import write_tiny_llama

    llm = {
        "item_text": "{title}",
        "llm_backend": "hf",
        "llm_path": str(write_tiny_llama(tmp_path / "llama")),
        "ranking_mode": "verbalizer",
        "no_cache": False,
        "llm_cache_dir": str(tmp_path / "cache"),
        "eval_users": None,
    }
    path = write_suite(
        tmp_path, tiny, protocols=[{"type": "uniform", "size": 6}], models=[{"model": "LLMRanker"}]
    )
    body = yaml.safe_load(path.read_text())
    body["config"].update(llm)
    path.write_text(yaml.safe_dump(body))
    record_file = tmp_path / "out" / "LLMRanker__uniform6-s2020.json"

    run_suite(path)
    first = json.loads(record_file.read_text())
    assert first["cost"]["misses"] > 0 and first["cost"]["seconds_per_user"] > 0
    run_suite(path, force=True)  # every answer from the cache
    again = json.loads(record_file.read_text())
    assert again["metrics"] == first["metrics"] and again["started_at"] >= first["started_at"]
    assert again["cost"] == first["cost"] and again["wall_time"]["eval_s"] == first["wall_time"]["eval_s"]
    assert again["cost_measured_by"] == {"started_at": first["started_at"], "command": first["command"]}
    assert_per_user_file_matches_the_metrics(tmp_path / "out", again)

    for stale in (tmp_path / "cache").iterdir():  # asked again: its own, new measurement
        stale.unlink()
    run_suite(path, force=True)
    fresh = json.loads(record_file.read_text())
    assert fresh["cost"]["misses"] == first["cost"]["misses"] and "cost_measured_by" not in fresh
