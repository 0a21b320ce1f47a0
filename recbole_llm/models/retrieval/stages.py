"""The two models of a `TwoStage` pipeline: each checked before any data is loaded, then trained in
the same run on the run's data settings (as the `retriever` candidate protocol does), or loaded from
a saved RecBole checkpoint.

A stage trained here is kept in `stage_cache_dir`, keyed as resume states are (model class and every
setting that changes training), so that the pipelines of a grid (one SASRec re-ranked by several
rankers, or re-ranking several retrievers) train it once.
"""

from __future__ import annotations

import os
import shutil
from logging import getLogger
from pathlib import Path

import numpy as np
import torch

from recbole_llm.atomic import partial_path
from recbole_llm.config import Config
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.evaluation.resume import resume_path
from recbole_llm.evaluation.trainer import trusted_checkpoints
from recbole_llm.quick_start import Trained, stage_config, train
from recbole_llm.registry import get_model

# Both stages score TwoStage's own batches, so they must cut histories where TwoStage does.
_SET_BY_PIPELINE = "MAX_ITEM_LIST_LENGTH"


def stage_spec(config, stage: str) -> tuple[str, dict, str | None]:
    """(model name, config of the stage's run, checkpoint path or None) of `stage`."""
    name, overrides = config[stage], config[f"{stage}_config"] or {}
    given = {**stage_config(config, overrides), _SET_BY_PIPELINE: config[_SET_BY_PIPELINE]}
    return name, given, config[f"{stage}_checkpoint"]


def check_stage(config, stage: str) -> type:
    """The stage's model class, its settings checked as its own run would check them."""
    name, overrides, checkpoint = config[stage], config[f"{stage}_config"], config[f"{stage}_checkpoint"]
    if not name or not isinstance(name, str):
        raise RecBoleLLMError(
            f"TwoStage needs a {stage} model name, e.g. --retriever=EmbeddingRetriever --ranker=SASRec."
        )
    try:
        model_class = get_model(name)
    except RecBoleLLMError as err:
        raise RecBoleLLMError(f"{stage}: {err}") from None
    if overrides is not None and not isinstance(overrides, dict):
        raise RecBoleLLMError(f"{stage}_config must be a mapping of config keys, not {overrides!r}.")
    if _SET_BY_PIPELINE in (overrides or {}):
        raise RecBoleLLMError(
            f"Set {_SET_BY_PIPELINE} for TwoStage, not in {stage}_config: both stages read its batches."
        )
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise RecBoleLLMError(f"{stage}_checkpoint not found: {checkpoint}")
    check_model_config = getattr(model_class, "check_config", None)
    if check_model_config is not None:
        name, given, _ = stage_spec(config, stage)
        check_model_config(Config(name, config["dataset"], None, given))
    return model_class


def _cache_file(config, name: str, given: dict) -> Path | None:
    """Where the stage `name` trained with `given` settings is kept (None: `stage_cache_dir` unset)."""
    if config["stage_cache_dir"] is None:
        return None
    stage = Config(name, config["dataset"], None, given)
    return Path(config["stage_cache_dir"]) / resume_path(stage, stage.model_class).name


def fit_stage(config, stage: str, dataset) -> Trained:
    """The stage's model, trained in this run or loaded from its checkpoint, on `dataset`'s ids."""
    name, given, path = stage_spec(config, stage)
    cached = _cache_file(config, name, given) if path is None else None
    if cached is not None and cached.is_file():
        getLogger().info(f"TwoStage: {stage} {name} trained by an earlier run with these settings: {cached}")
        path = str(cached)
    if path is None:
        trained = train(name, config["dataset"], None, given, protocols=[])
        if cached is not None and trained.epochs_run > 0:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = partial_path(cached)
            shutil.copyfile(trained.trainer.saved_model_file, partial)
            os.replace(partial, cached)
    else:
        with trusted_checkpoints():
            checkpoint = torch.load(path, map_location=config["device"])
        saved = checkpoint["config"]
        if saved["model"] != name:
            held = saved["model"]
            raise RecBoleLLMError(
                f"{stage}_checkpoint {path} holds a {held} model, not {name}: set {stage}: {held}."
            )
        # The settings its run was given (e.g. embedding_size) rebuild the same model; this run's win.
        settings = {**saved.external_config_dict, **given, "epochs": 0}
        trained = train(name, config["dataset"], None, settings, protocols=[])
        try:
            trained.model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            first = str(err).splitlines()[-1].strip()
            raise RecBoleLLMError(f"{stage}_checkpoint {path} does not fit the {stage}: {first}") from None
        trained.model.load_other_parameter(checkpoint.get("other_parameter"))
    other = trained.split.dataset
    for field in (dataset.uid_field, dataset.iid_field):
        if not np.array_equal(dataset.field2id_token[field], other.field2id_token[field]):
            raise RecBoleLLMError(
                f"The {stage} numbers the {field}s differently from TwoStage: give data settings "
                f"(load_col, filters) to TwoStage, not in {stage}_config."
            )
    return trained
