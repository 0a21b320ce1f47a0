"""The installed console scripts, run as a user would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )


def test_run_recbole_trains_and_tests_on_a_tiny_dataset(tiny, tmp_path):
    proc = run(
        tmp_path,
        "run_recbole",
        "--model=BPR",
        "--dataset=tiny",
        f"--data_path={tiny['data_path']}",
        "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}",
        "--epochs=2",
        "--show_progress=False",
        "--candidates={'type': 'uniform', 'size': 10}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("test [uniform10") and "12 users]" in ln]
    assert line and "ndcg@10=" in line[0] and "recall@10=1.0000" in line[0]
    assert "run_recbole: warning" not in proc.stderr, "every key given is a real one"


def test_config_files_are_read_in_order(tiny, tmp_path):
    (tmp_path / "a.yaml").write_text(f"data_path: {tiny['data_path']}\nepochs: 5\nshow_progress: False\n")
    (tmp_path / "b.yaml").write_text("epochs: 1\nload_col: {inter: [user_id, item_id, timestamp]}\n")
    proc = run(tmp_path, "run_recbole", "--model=Pop", "--dataset=tiny", "--config_files=a.yaml b.yaml")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch 1 training" not in proc.stdout, "b.yaml's epochs=1 wins over a.yaml's 5"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model=SASRc"], "Unknown model 'SASRc'. Did you mean: SASRec"),
        (["--model=Pop", "--dataset=nowhere"], "Dataset 'nowhere' not found"),
        (["--model=Pop", "--epochs=many"], "epochs='many' should be of type int"),
        (["--model=Pop", "--config_files=missing.yaml"], "Config file not found: missing.yaml"),
        (["--model=Pop", "--candidates={'type': 'uniform'}"], "size must be an integer"),
        (["--model=Pop", "--eval_users=-3"], "eval_users must be a positive integer"),
        (["--model=SASRec", "--epochs=-3"], "epochs must be a non-negative integer"),
        (["--model=Pop", "--train_batch_size=0"], "train_batch_size must be a positive integer"),
        (
            ["--model=Pop", "--eval_user=5", "--strict"],
            "unknown config key 'eval_user' (strict). Did you mean: eval_users",
        ),
    ],
)
def test_bad_input_gives_one_actionable_line(tmp_path, args, message):
    proc = run(tmp_path, "run_recbole", *args)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("run_recbole: error: ") and message in last
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "epochs: 5\nlearning_rate: 0.01\n  train_batch_size: 64\n",
            "a.yaml line 3: mapping values are not allowed",
        ),
        ("- epochs\n- 5\n", "a.yaml: expected key: value pairs at the top level, found a list"),
    ],
)
def test_malformed_config_file_names_file_line_and_problem(tmp_path, text, message):
    (tmp_path / "a.yaml").write_text(text)
    proc = run(tmp_path, "run_recbole", "--model=Pop", "--config_files=a.yaml")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"run_recbole: error: {message}")
    assert "Traceback" not in proc.stderr


def test_misspelled_key_warns_in_one_line_and_the_run_goes_on(tiny, tmp_path):
    proc = run(
        tmp_path,
        "run_recbole",
        "--model=Pop",
        "--dataset=tiny",
        f"--data_path={tiny['data_path']}",
        "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}",
        "--epochs=1",
        "--show_progress=False",
        "--eval_user=5",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [ln for ln in proc.stderr.splitlines() if ln.startswith("run_recbole: warning")]
    assert len(warned) == 1
    assert warned[0].startswith(
        "run_recbole: warning: unknown config key 'eval_user' (ignored). Did you mean: eval_users"
    )
    assert "test [full, 12 users]" in proc.stdout, "eval_users was not set by the misspelled key"
