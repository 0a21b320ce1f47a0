import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_the_yaml_defaults_inside_the_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("recbole_llm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for yaml_file in ROOT.glob("properties/**/*.yaml"):
        assert f"recbole_llm/{yaml_file.relative_to(ROOT)}" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"run_recbole = recbole_llm.cli:run_recbole_main" in entry_points
