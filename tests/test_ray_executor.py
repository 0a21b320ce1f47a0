"""`--executor ray`: a suite's missing runs as Ray tasks on a local Ray cluster (127.0.0.1, two worker
CPUs) write the same records as a local run, and a failing run leaves the others' records."""

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recbole_llm.benchmark.suite import run_suite
from recbole_llm.errors import RecBoleLLMError

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs, as `ray start` would run one; its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = [sys.executable, "-m", "ray.scripts.scripts"]
    subprocess.run(
        [
            *cli,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
    )
    yield f"127.0.0.1:{port}"
    subprocess.run([*cli, "stop", "--force"], check=False, capture_output=True)


def write_suite(folder: Path, tiny: dict, output: str, models: list) -> Path:
    body = {
        "name": "tiny-ray",
        "dataset": "tiny",
        "config": {k: v for k, v in tiny.items() if k != "candidates_dir"},
        "protocols": [{"type": "full"}, {"type": "uniform", "size": 6}],
        "models": models,
        "output": output,
    }
    path = folder / f"{output}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


MODELS = [
    {"model": "Pop"},
    {"model": "BPR", "name": "BPR-2", "config": {"epochs": 2}},
    {"model": "SASRec", "name": "SASRec-SCE", "config": {"loss_type": "SCE", "num_negatives": 4}},
]


def metrics(folder: Path) -> dict:
    out = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        out[path.name] = (record["metrics"], record["protocol"]["lists_sha256"], record["run_key"])
    return out


def test_a_suite_run_on_ray_writes_the_records_a_local_run_writes(tiny, tmp_path, cluster):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray task with num_cpus 1 runs one thread: the same arithmetic
    try:
        run_suite(write_suite(tmp_path, tiny, "local", MODELS))
    finally:
        torch.set_num_threads(threads)
    table = run_suite(write_suite(tmp_path, tiny, "ray", MODELS), executor="ray", address=cluster)
    assert not ray.is_initialized(), "the executor disconnects from the cluster it joined"
    local, remote = metrics(tmp_path / "local"), metrics(tmp_path / "ray")
    assert len(local) == 6 and local == remote
    assert "SASRec-SCE" in table and (tmp_path / "ray" / "leaderboard.md").read_text() == table
    record = json.loads((tmp_path / "ray" / "Pop__full.json").read_text())
    assert record["command"] == shlex.join(
        [Path(sys.argv[0]).name, *sys.argv[1:]]
    )  # the driver's, not a worker's


def test_a_failing_ray_run_is_reported_and_the_others_are_kept(tiny, tmp_path, cluster):
    broken = {"model": "BPR", "name": "BPR-broken", "config": {"checkpoint_dir": "/proc/no-such-dir"}}
    path = write_suite(tmp_path, tiny, "ray", [MODELS[0], broken])
    with pytest.raises(RecBoleLLMError, match=r"1 run\(s\) failed .*BPR-broken: \w+Error"):
        run_suite(path, executor="ray", address=cluster)
    assert sorted(p.name for p in (tmp_path / "ray").glob("*.json")) == [
        "Pop__full.json",
        "Pop__uniform6-s2020.json",
    ]
    assert "Pop" in (tmp_path / "ray" / "leaderboard.md").read_text()


def test_unknown_executor_and_resources_fail_before_anything_runs(tiny, tmp_path):
    path = write_suite(tmp_path, tiny, "out", [{"model": "Pop", "resources": {"num_cpu": 2}}])
    with pytest.raises(RecBoleLLMError, match="Unknown executor 'rayy'; choose from local, ray"):
        run_suite(path, executor="rayy")
    with pytest.raises(RecBoleLLMError, match=r"unknown resource\(s\) \['num_cpu'\] for Pop"):
        run_suite(path)
    assert not (tmp_path / "out").exists()
