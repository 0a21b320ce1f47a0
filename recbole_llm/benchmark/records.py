"""What a result file records besides metrics: config, versions, machine, per-user values. Never secrets."""

from __future__ import annotations

import enum
import gzip
import hashlib
import json
import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path

from recbole_llm.atomic import write_atomic

# Credential-like keys ("openai_api_key", "hf_token", "client_secret"), but not "max_new_tokens" nor
# "llm_api_key_env" (the name of a variable, not its value).
SECRET_KEY = re.compile(r"(api_?key|(^|_)token(_|$)|secret|password)(?!.*_env$)", re.IGNORECASE)
_PACKAGES = ("recbole-llm", "recbole", "torch", "numpy", "pandas", "transformers")
# Per-user values keep 6 decimals: far below any difference a test or interval can resolve.
PER_USER_DIGITS = 6


def jsonable(value):
    """A JSON-safe copy of a config value (enums by name, other objects as text)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.name
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def redact(config: dict) -> dict:
    """Drop values whose key looks like a credential, at any depth."""
    return {
        k: "<redacted>" if SECRET_KEY.search(k) else redact(v) if isinstance(v, dict) else v
        for k, v in config.items()
    }


def config_snapshot(config) -> dict:
    return redact(jsonable(dict(config.final_config_dict)))


def fingerprint(obj) -> str:
    return hashlib.sha1(json.dumps(jsonable(obj), sort_keys=True).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def cpu_model() -> str:
    """The CPU's marketing name: speeds (bf16 above all) differ by CPU, not by architecture string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def versions_text(found: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in found.items())


def provenance(command: str) -> dict:
    """What every result file carries besides its numbers: command, finish time, versions, machine."""
    return {
        "command": command,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "machine": machine(),
    }


def write_result(folder: Path, name: str, result: dict, markdown: list[str]) -> None:
    """`folder/name.json` (the record) and `folder/name.md` (its table) of a benchmark script."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / f"{name}.md").write_text("\n".join(markdown))


def per_user_path(record_path: Path) -> Path:
    """Where a record's per-user values live: `<record>.users.json.gz` beside it.

    A sibling file, not a key of the record: 22k users x 12 metrics would bury the record's own text.
    """
    return record_path.with_name(record_path.stem + ".users.json.gz")


def write_per_user(path: Path, per_user: dict) -> None:
    """Write `{"users": [...], "values": {metric: [...]}}` gzipped, atomically and byte-reproducibly."""
    data = {
        "users": [str(u) for u in per_user["users"]],
        "values": {k: [round(float(v), PER_USER_DIGITS) for v in vs] for k, vs in per_user["values"].items()},
    }
    write_atomic(path, gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0))


def load_record(path: Path) -> dict:
    """A suite record with its per-user values under `per_user` when it names a file that exists
    (records written before per-user values were kept have none)."""
    record = json.loads(path.read_text())
    name = record.get("per_user_file")
    if name and (path.parent / name).is_file():
        record["per_user"] = json.loads(gzip.decompress((path.parent / name).read_bytes()))
    return record
