"""Model lookup: recbole_llm's own models, then entry-point plugins, then RecBole's models.

Targets are imported lazily so that `get_model("SASRec")` never imports an LLM stack.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
from functools import lru_cache
from pathlib import Path

from recbole_llm.errors import RecBoleLLMError, did_you_mean

ENTRY_POINT_GROUP = "recbole_llm.models"

# name -> "module:Class"; the plugin's own models (one line per model).
BUILTIN_MODELS: dict[str, str] = {
    "Pop": "recbole_llm.models.general.pop:Pop",
    "SASRec": "recbole_llm.models.sequential.sasrec:SASRec",
    "GRU4Rec": "recbole_llm.models.sequential.gru4rec:GRU4Rec",
    "KangSASRec": "recbole_llm.models.sequential.kang_sasrec:KangSASRec",
    "LLMRanker": "recbole_llm.models.llm.ranker:LLMRanker",
    "LLMVerbalizerRanker": "recbole_llm.models.llm.verbalizer_ft:LLMVerbalizerRanker",
    "LLMPointwiseRanker": "recbole_llm.models.llm.pointwise_ft:LLMPointwiseRanker",
    "LLMListwiseRanker": "recbole_llm.models.llm.listwise_ft:LLMListwiseRanker",
    "EmbeddingRetriever": "recbole_llm.models.retrieval.retriever:EmbeddingRetriever",
    "TwoStage": "recbole_llm.models.retrieval.two_stage:TwoStage",
}

# Qualifier that forces RecBole's own class when the plugin shadows a name (e.g. "recbole.SASRec").
RECBOLE_PREFIX = "recbole."

_registered: dict[str, type] = {}

_RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)
# exlib models import optional heavy libraries; RecBole resolves them itself.
_RECBOLE_EXLIB_MODELS = ("lightgbm", "xgboost")


def register_model(cls: type, name: str | None = None) -> type:
    """Make a model class available under `name` (default: its class name); usable as decorator."""
    _registered[name or cls.__name__] = cls
    return cls


@lru_cache(maxsize=1)
def _entry_point_models() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points().select(group=ENTRY_POINT_GROUP)}


@lru_cache(maxsize=1)
def _recbole_models() -> dict[str, str]:
    """RecBole's model names -> "module:Class", read from its packages' import lines.

    Reading the `from ... import Name` lines of each package's `__init__.py` lists RecBole's models
    without importing them (importing all of them takes ~10 s); a class is imported when asked for.
    """
    import recbole.model

    root = Path(recbole.model.__file__).parent
    models: dict[str, str] = {}
    for package in _RECBOLE_MODEL_PACKAGES:
        tree = ast.parse((root / package / "__init__.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    models.setdefault(alias.asname or alias.name, f"{node.module}:{alias.name}")
    return models


def _plugin_names() -> list[str]:
    return [*_registered, *BUILTIN_MODELS, *_entry_point_models()]


def available_models() -> list[str]:
    """Every model name `get_model` accepts, plugin models first."""
    names = _plugin_names()
    return names + [n for n in _recbole_models() if n not in names]


def _load_target(target: str) -> type:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _find(name: str) -> type | None:
    if name.startswith(RECBOLE_PREFIX):
        target = _recbole_models().get(name[len(RECBOLE_PREFIX) :])
        return None if target is None else _load_target(target)
    if name in _registered:
        return _registered[name]
    if name in BUILTIN_MODELS:
        return _load_target(BUILTIN_MODELS[name])
    if name in _entry_point_models():
        return _entry_point_models()[name].load()
    target = _recbole_models().get(name)
    return None if target is None else _load_target(target)


def get_model(name: str) -> type:
    """Resolve a model name to its class; unknown names raise one error with close matches."""
    if not isinstance(name, str):
        return name
    if name.lower() in _RECBOLE_EXLIB_MODELS:
        from recbole.utils import get_model as recbole_get_model

        return recbole_get_model(name)
    cls = _find(name)
    if cls is None:
        # Accept a unique case-insensitive match ("sasrec" -> "SASRec").
        matches = [n for n in available_models() if n.lower() == name.lower()]
        cls = _find(matches[0]) if len(matches) == 1 else None
    if cls is None:
        raise RecBoleLLMError(f"Unknown model '{name}'." + did_you_mean(name, available_models()))
    return cls


def get_trainer(model_type, model_name: str | type) -> type:
    """The model's trainer class, extended with the plugin's evaluation protocol.

    A model may name its own trainer through a `trainer_class` attribute; otherwise RecBole picks
    one by name and model type, as it does for its own models.
    """
    from recbole.utils import get_trainer as recbole_get_trainer

    from recbole_llm.evaluation.trainer import with_protocol

    model_class = get_model(model_name)
    trainer = getattr(model_class, "trainer_class", None)
    if trainer is None:
        trainer = recbole_get_trainer(model_type, model_class.__name__)
    return with_protocol(trainer)
