"""Where a run's YAML defaults come from, and reading YAML files with one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import recbole
import yaml

from recbole_llm.errors import RecBoleLLMError


def _properties_dir() -> Path:
    """YAML defaults: inside the package when installed from a wheel, else the checkout's."""
    packaged = Path(__file__).with_name("properties")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "properties"


PROPERTIES = _properties_dir()
RECBOLE_PROPERTIES = Path(recbole.__file__).resolve().parent / "properties"

# What a YAML error usually means in a config file, keyed by the start of PyYAML's problem text.
_HINTS = {
    "mapping values are not allowed here": "check the indentation/colon",
    "expected <block end>": "check the indentation",
    "found character '\\t'": "indent with spaces, not tabs",
    "found unexpected end of stream": "an unclosed quote or bracket?",
}
_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _describe(path: str | Path, err: Exception) -> str:
    """`a.yaml line 3: <problem> (<hint>)`: PyYAML's own message spans several lines."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    hint = next((h for start, h in _HINTS.items() if problem.startswith(start)), None)
    where = f"{path} line {mark.line + 1}" if mark else str(path)
    return f"{where}: {problem}" + (f" ({hint})" if hint else "")


def read_yaml_mapping(path: str | Path, loader: type = yaml.SafeLoader) -> dict:
    """The `key: value` pairs of a YAML file (an empty file has none).

    Malformed or non-mapping files fail in one line naming the file, the line and the problem,
    before RecBole would merge them (a list would fail deep inside it with a TypeError).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=loader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RecBoleLLMError(_describe(path, err)) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = _KINDS.get(type(data), f"a {type(data).__name__}")
        raise RecBoleLLMError(f"{path}: expected key: value pairs at the top level, found {kind}")
    return data


def _own_yaml(cls: type) -> Path | None:
    """The YAML defaults `cls` itself declares, if any.

    A `yaml_file` attribute is resolved against the folder of the module defining the class, so
    the defaults do not depend on where the run starts. Otherwise classes of RecBole and of this
    plugin have theirs in `properties/model/<ClassName>.yaml`.
    """
    own = cls.__dict__.get("yaml_file")
    if own:
        module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
        base = Path(module_file).resolve().parent if module_file else Path.cwd()  # e.g. a notebook
        path = base / own
        if not path.is_file():
            raise RecBoleLLMError(f"{cls.__qualname__}.yaml_file not found: {path}")
        return path
    for package, properties in (("recbole_llm", PROPERTIES), ("recbole", RECBOLE_PROPERTIES)):
        if cls.__module__.startswith(package + "."):
            path = properties / "model" / f"{cls.__name__}.yaml"
            return path if path.is_file() else None
    return None


def model_yaml_files(model_class: type) -> list[Path]:
    """YAML defaults along the class chain, base first: a subclass overrides its parents.

    RecBole itself loads only the YAML named after the final class, so without this a subclass of
    RecBole's SASRec would lose `n_layers`, `hidden_size`, ...
    """
    files = (_own_yaml(cls) for cls in reversed(model_class.__mro__))
    return [f for f in files if f is not None]


def default_yaml_files(model_class: type, dataset: str) -> list[Path]:
    """The YAML defaults applied over RecBole's for a run, least specific first."""
    dataset_file = PROPERTIES / "dataset" / f"{dataset}.yaml"
    files = [PROPERTIES / "overall.yaml", *model_yaml_files(model_class), dataset_file]
    return [f for f in files if f.is_file()]
