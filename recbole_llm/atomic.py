"""Files written whole or not at all, safely by several processes at once (a suite's runs on Ray).

A write goes to a temporary file named after the writing process and is renamed over the target, so
a kill mid-write leaves the previous file, and two runs writing the same file (a candidate list both
draw, a stage both train) never interleave: the last rename wins, and both wrote the same content.
"""

from __future__ import annotations

import os
from pathlib import Path


def partial_path(path: Path) -> Path:
    """The temporary file this process writes `path` through."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, data: str | bytes) -> None:
    partial = partial_path(path)
    if isinstance(data, bytes):
        partial.write_bytes(data)
    else:
        partial.write_text(data)
    os.replace(partial, path)
