"""Where a suite's missing runs execute: in this process one after another (`local`, the default), or
as Ray tasks (`ray`), one per run, on a running cluster (`address`) or on a Ray instance started here.

Both write through the same result store: each run writes its own records atomically, candidate lists
and stages are written through per-process temporary files, so runs that share them can finish in any
order. A run that fails on Ray does not stop the others; every failure is reported in one line after
the table is regenerated from what finished.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from recbole_llm.errors import RecBoleLLMError

EXECUTORS = ("local", "ray")
DEFAULT_RESOURCES = {"num_cpus": 1, "num_gpus": 0}


def resources(suite: dict, entry: dict) -> dict:
    """What one run of `entry` asks Ray for: the suite's `resources`, then the entry's, over 1 CPU."""
    asked = {**DEFAULT_RESOURCES, **(suite.get("resources") or {}), **(entry.get("resources") or {})}
    unknown = set(asked) - set(DEFAULT_RESOURCES)
    if unknown:
        raise RecBoleLLMError(
            f"{suite['file']}: unknown resource(s) {sorted(unknown)} for {entry['name']}; "
            f"known: {sorted(DEFAULT_RESOURCES)}."
        )
    return asked


def run_local(suite: dict, runs: list[tuple]) -> list[str]:
    """Each (run, why it runs) here, one after another; a failure stops the suite (finished records stay)."""
    from recbole_llm.benchmark.suite import describe, run_entry

    for run, reason in runs:
        print(f"running {describe(run)}: {reason}", file=sys.stderr)
        run_entry(suite, run)
    return []


def run_ray(suite: dict, runs: list[tuple], address: str | None) -> list[str]:
    """Each (run, why it runs) as a Ray task with its resources; returns one line per failed run."""
    try:
        import ray
    except ImportError as err:  # RecBole depends on ray, so this is a broken environment
        raise RecBoleLLMError(f"--executor ray needs Ray ({err}); pip install 'ray[default]'.") from err
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    try:
        return _run_tasks(ray, suite, runs)
    finally:
        if started:
            ray.shutdown()


def _run_tasks(ray, suite: dict, runs: list[tuple]) -> list[str]:
    from recbole_llm.benchmark.suite import describe

    task = ray.remote(_run_cell)
    command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    pending = {}
    for run, reason in runs:
        what = describe(run)
        print(f"submitting {what} to Ray: {reason}", file=sys.stderr)
        ref = task.options(**resources(suite, run.entry), name=what).remote(
            str(Path(suite["file"]).resolve()), run.entry["name"], run.seed, os.getcwd(), command
        )
        pending[ref] = what
    failures = []
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        what = pending.pop(ref)
        try:
            ray.get(ref)
            print(f"finished {what} (ray)", file=sys.stderr)
        except Exception as err:  # a task's own error, re-raised by Ray with its traceback
            failures.append(f"{what}: {failure_line(getattr(err, 'cause', None) or err)}")
    return failures


def failure_line(error: BaseException) -> str:
    """`Type: last line of the message`: a traceback ends with what went wrong; some errors say nothing."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__


def _run_cell(suite_file: str, name: str, seed: int | None, cwd: str, command: str) -> None:
    """One run inside a Ray worker: the driver's working directory (relative `checkpoint_dir`,
    `saved/`), the suite planned again from its file, the records written as a local run writes them."""
    from recbole_llm.benchmark.suite import load_suite, plan, run_entry

    os.chdir(cwd)
    suite = load_suite(suite_file)
    (run,) = [r for r in plan(suite) if r.entry["name"] == name and r.seed == seed]
    run_entry(suite, run, command=command)
