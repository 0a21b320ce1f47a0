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
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("test [uniform10, 12 users]")]
    assert line and "ndcg@10=" in line[0] and "recall@10=1.0000" in line[0]


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
    ],
)
def test_bad_input_gives_one_actionable_line(tmp_path, args, message):
    proc = run(tmp_path, "run_recbole", *args)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("run_recbole: error: ") and message in last
    assert "Traceback" not in proc.stderr
