"""RecBole atomic files (`.inter`, `.item`, `.user`): their header and columns, checked before RecBole.

RecBole splits each header field on ':' and parses whole files with pandas' python engine, so a
malformed file ends in a traceback from deep inside its loader that names neither the file nor the
column. Here the header line is read first, and a column's values are parsed (with pandas' fast C
engine, one column at a time) only for the checks that need them, so that each defect becomes one
line naming the file, the column and the fix.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from recbole.utils import FeatureType

from recbole_llm.errors import RecBoleLLMError

TYPES = [t.value for t in FeatureType]  # token, float, token_seq, float_seq


def _error(path: Path, problem: str, fix: str) -> RecBoleLLMError:
    return RecBoleLLMError(f"{path}: {problem}; {fix}.")


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


@dataclass(frozen=True)
class AtomicFile:
    """One atomic file: where it is, how it is separated, and its header's column types in file order."""

    path: Path
    types: dict[str, str]
    separator: str
    encoding: str | None  # None: the locale's, as RecBole opens files

    def fail(self, problem: str, fix: str) -> RecBoleLLMError:
        return _error(self.path, problem, fix)

    def require(self, column: str, fix: str) -> None:
        """Refuse a file whose header lacks `column`, listing the columns it does have."""
        if column not in self.types:
            raise self.fail(f"no '{column}' column (its columns: {', '.join(self.types)})", fix)

    def has_rows(self) -> bool:
        """Whether a non-blank line follows the header; reads only up to the first one."""
        with open(self.path, encoding=self.encoding) as f:
            next(f)
            return any(line.strip() for line in f)

    def read(self, columns: list[str], dtype) -> pd.DataFrame:
        """`columns` of every row, named without their type, as RecBole's loader would split them."""
        frame = pd.read_csv(
            self.path,
            sep=self.separator,
            usecols=[f"{c}:{self.types[c]}" for c in columns],
            dtype=dtype,
            encoding=self.encoding,
            quoting=csv.QUOTE_NONE,
            engine="c",
        )
        frame.columns = [c.split(":")[0] for c in frame.columns]
        return frame


def read_atomic_file(path: str | Path, separator: str, encoding: str | None = None) -> AtomicFile:
    """Read and check the header line of an atomic file: `name:type` fields, known types, no repeats."""
    path = Path(path)
    try:
        with open(path, encoding=encoding) as f:
            header = f.readline().rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise _error(path, f"not {encoding or 'UTF-8'} text", "save it as text or set `encoding`") from err
    if not header.strip():
        raise _error(
            path,
            "empty, or its first line is blank",
            f"begin it with a header of name:type columns separated by {separator!r} (e.g. 'user_id:token'), "
            "then one row per line",
        )
    fields = header.split(separator)
    if len(fields) == 1 and any(sep in header for sep in ",; |" if sep != separator):
        raise _error(
            path,
            f"the header '{header}' has no {separator!r} between its columns",
            "separate the columns by field_separator, or set field_separator to the file's separator",
        )
    types: dict[str, str] = {}
    for field in fields:
        name, _, kind = field.partition(":")
        if not kind:
            raise _error(
                path, f"header column '{name}' has no type", f"write it as '{name}:token' (or :float)"
            )
        if kind not in TYPES:
            raise _error(path, f"column '{name}' has unknown type '{kind}'", f"use one of {', '.join(TYPES)}")
        if name in types:
            raise _error(path, f"column '{name}' appears twice in the header", "rename or drop one of them")
        types[name] = kind
    return AtomicFile(path, types, separator, encoding)


def check_numbers(file: AtomicFile, columns: list[str], time: str | None = None) -> None:
    """Refuse non-numeric values in float `columns`, and empty ones in the `time` column.

    RecBole would stop on the first non-number without naming the file, and would silently fill an
    empty time with the column mean, moving that interaction in the time order.
    """
    if not columns:
        return
    try:
        values = file.read(columns, np.float64)
    except ValueError:  # a non-number somewhere: find it, reading the columns as text
        values = None
    if values is not None and (time is None or not values[time].isna().any()):
        return
    text = file.read(columns, str)
    for column in columns:
        bad = text[column][text[column].notna() & pd.to_numeric(text[column], errors="coerce").isna()]
        if len(bad):
            raise file.fail(
                f"column '{column}' (float) holds non-numbers in {_rows(len(bad))}, first '{bad.iloc[0]}'",
                "write numbers there (times e.g. as Unix seconds), or type the column :token if it is text",
            )
    empty = int(text[time].isna().sum())
    raise file.fail(
        f"column '{time}' is empty in {_rows(empty)}, which then have no place in the time order",
        "fill those values or drop those rows",
    )


def check_unique_ids(file: AtomicFile, column: str) -> None:
    """Refuse a feature file (`.item`, `.user`) that describes the same id more than once."""
    counts = file.read([column], str)[column].value_counts(dropna=False)
    repeated = counts[counts > 1]
    if len(repeated):
        raise file.fail(
            f"column '{column}' lists '{repeated.index[0]}' {repeated.iloc[0]} times "
            f"(repeated ids: {len(repeated)})",
            "keep one row per id",
        )
