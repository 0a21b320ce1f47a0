"""Console entry points: `run_recbole` (RecBole's conventions) and `recbole-llm` (subcommands)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings

import yaml

from recbole_llm.config_checks import UnknownConfigKeyWarning
from recbole_llm.errors import RecBoleLLMError


def parse_overrides(args: list[str]) -> dict[str, str]:
    """`--key=value` pairs (a bare `--flag` means True); values are typed later by Config."""
    overrides: dict[str, str] = {}
    for arg in args:
        if not arg.startswith("--") or len(arg) == 2:
            raise RecBoleLLMError(f"Unexpected argument {arg!r}: use --key=value.")
        key, sep, value = arg[2:].partition("=")
        overrides[key] = value if sep else "True"
    return overrides


def _config_files(value: str | None) -> list[str] | None:
    files = value.split() if value else None
    for f in files or []:
        if not os.path.isfile(f):
            raise RecBoleLLMError(f"Config file not found: {f}")
    return files


def _fail(prog: str, err: Exception) -> int:
    message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


USER_ERRORS = (RecBoleLLMError, yaml.YAMLError)


@contextlib.contextmanager
def _config_warnings_as_lines(prog: str):
    """Show unknown-key warnings as `<prog>: warning: <message>`, not as Python's two-line warning.

    Also a decorator: the command's whole run, config files and suites included, is covered.
    """
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, UnknownConfigKeyWarning):
                print(f"{prog}: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


@_config_warnings_as_lines("run_recbole")
def run_recbole_main(argv: list[str] | None = None) -> int:
    """`run_recbole --model=SASRec --dataset=ml-100k --config_files="a.yaml b.yaml" --epochs=5`."""
    parser = argparse.ArgumentParser(
        prog="run_recbole",
        description="Train and evaluate one model; any other --key=value overrides the config.",
    )
    parser.add_argument("--model", "-m", default="SASRec")
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    args, rest = parser.parse_known_args(argv)
    try:
        from recbole_llm.quick_start import run

        result = run(args.model, args.dataset, _config_files(args.config_files), parse_overrides(rest))
    except USER_ERRORS as err:
        return _fail("run_recbole", err)
    for label, metrics in result.test.items():
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"test [{label}, {result.n_users[label]} users]: {shown}")
        if label in result.reports:
            cost = ("–" if v is None else f"{v:.4g}" for v in result.reports[label].values())
            print(f"cost [{label}]: " + "  ".join(f"{k}={v}" for k, v in zip(result.reports[label], cost)))
    return 0


def _print_to_pipe(text: str) -> None:
    """Print, quietly stopping when the reader has gone (`recbole-llm models | head`)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the broken pipe again when flushing at exit: point stdout at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _write_expected(paths: list[str]) -> None:
    """`recbole-llm expected SUITE.yaml ...`: each suite's expected file, from the records as they are."""
    from recbole_llm.benchmark.expected import write_expected
    from recbole_llm.benchmark.suite import load_suite

    for path in paths:
        written = write_expected(load_suite(path))
        print(f"{path}: " + (f"wrote {written}" if written else "no records, no expected file"))


@_config_warnings_as_lines("recbole-llm")
def main(argv: list[str] | None = None) -> int:
    """`recbole-llm leaderboard SUITE.yaml`, `recbole-llm expected SUITE.yaml ...`, `recbole-llm models`."""
    parser = argparse.ArgumentParser(prog="recbole-llm")
    sub = parser.add_subparsers(dest="command", required=True)
    board = sub.add_parser("leaderboard", help="run a benchmark suite and write its table")
    board.add_argument("suite", help="suite YAML, e.g. benchmarks/ml-100k.yaml")
    board.add_argument("--force", action="store_true", help="rerun runs that already have results")
    board.add_argument("--models", default=None, help="comma-separated subset of the suite's models")
    board.add_argument("--seeds", default=None, help="comma-separated subset of the suite's seeds")
    board.add_argument(
        "--executor",
        default="local",
        choices=("local", "ray"),
        help="local: missing runs one after another here; ray: one Ray task each (resources per run)",
    )
    board.add_argument(
        "--address", default=None, help="Ray cluster address (host:port); default: start Ray on this machine"
    )
    board.add_argument(
        "--table-only",
        action="store_true",
        help="run nothing: say what would run and rewrite the table from the records there are",
    )
    board.add_argument(
        "--test-progress",
        action="store_true",
        help="train nothing: test the best weights so far of each unfinished run (its resume state), "
        "write them as interim records marked in the table, and rewrite the table",
    )
    sub.add_parser("models", help="list the model names that resolve")
    expected = sub.add_parser("expected", help="write each suite's expected scores from its records")
    expected.add_argument("suites", nargs="+", help="suite YAMLs, e.g. benchmarks/ml-100k.yaml")
    args = parser.parse_args(argv)
    try:
        if args.command == "models":
            from recbole_llm.registry import available_models

            _print_to_pipe("\n".join(available_models()))
            return 0
        if args.command == "expected":
            _write_expected(args.suites)
            return 0
        from recbole_llm.benchmark.suite import run_suite

        only = args.models.split(",") if args.models else None
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        table = run_suite(
            args.suite,
            force=args.force,
            only=only,
            seeds=seeds,
            executor=args.executor,
            address=args.address,
            table_only=args.table_only,
            test_progress=args.test_progress,
        )
    except USER_ERRORS as err:
        return _fail("recbole-llm", err)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
