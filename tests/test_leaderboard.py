import json

import pytest
import yaml

from recbole_llm.benchmark import suite as suite_module
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


def test_suite_writes_one_record_per_run_and_a_table(tiny, tmp_path, monkeypatch, capsys):
    table = run_suite(write_suite(tmp_path, tiny))
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
    assert len(list((tmp_path / "out" / "candidates" / "tiny").glob("uniform6-*.tsv"))) == 1

    # A rerun with the same settings trains nothing; a changed model config reruns only that model.
    calls = []
    monkeypatch.setattr(suite_module, "_run_entry", lambda suite, run: calls.append(run.entry["name"]))
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


def test_seeds_run_each_model_per_seed_and_average(tiny, tmp_path):
    path = write_suite(tmp_path, tiny, seeds=[1, 2], models=[{"model": "BPR", "config": {"epochs": 2}}])
    table = run_suite(path)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("BPR__full__seed*.json"))]
    assert [r["seed"] for r in records] == [1, 2]
    values = [r["metrics"]["ndcg@10"] for r in records]
    mean = sum(values) / 2
    std = (sum((v - mean) ** 2 for v in values)) ** 0.5  # sample std of two values
    row = next(line for line in table.splitlines() if line.startswith("| BPR |"))
    assert f"{mean:.4f} ± {std:.4f}" in row
    assert row.split(" | ")[len(DEFAULT_COLUMNS) + 1] == "2", "runs column"
    with pytest.raises(RecBoleLLMError, match="Seed 3 is not in the suite"):
        run_suite(path, seeds=[3])


def test_every_committed_suite_parses_and_names_known_models():
    from pathlib import Path

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
    assert rows["| CE"][1:4] == ["0.0600", "0.0600 ± 0.0141", "+0%"]
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
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    rows = {line.split(" | ")[0]: line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    column = header.split(" | ").index("retriever recall@20")
    assert rows["| TwoStage"][column] == "0.3125"
    assert rows["| Pop"][column] == "–"


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
