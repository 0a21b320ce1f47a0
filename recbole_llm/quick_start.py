"""Run one model on one dataset: train once, then evaluate on one or more test protocols.

Written on `recbole.config/data/trainer/utils` rather than `recbole.quick_start`, which imports ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from logging import getLogger

import numpy as np
import torch
from recbole.utils import init_logger, init_seed
from recbole.utils.argument_list import dataset_arguments, general_arguments

from recbole_llm.config import Config
from recbole_llm.data.candidates import top_n
from recbole_llm.data.protocol import (
    attach_validation_protocol,
    build_test_loader,
    graded_protocol,
    group_by_user,
    resolve_protocols,
)
from recbole_llm.data.protocols import Protocol, Retriever
from recbole_llm.data.split import Split, load_split, prepare_dataset_files
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.evaluation.scoring import score_loader
from recbole_llm.evaluation.trainer import trusted_checkpoints
from recbole_llm.registry import get_trainer


@dataclass
class Trained:
    """A fitted model (its best validation weights loaded) with its config and data split."""

    config: Config
    split: Split
    model: object
    trainer: object
    best_valid: dict | None
    epochs_run: int
    train_seconds: float
    test_loaders: dict = field(default_factory=dict)  # protocol label -> loader (lists bound)
    protocols: list[Protocol] = field(default_factory=list)


@dataclass
class RunResult:
    """Test metrics per protocol label, with what is needed to report and compare them."""

    trained: Trained
    test: dict[str, dict] = field(default_factory=dict)
    eval_seconds: dict[str, float] = field(default_factory=dict)
    n_users: dict[str, int] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)  # e.g. an LLM ranker's cost and parse rate
    lists: dict[str, dict] = field(default_factory=dict)  # which lists were ranked (EvalProtocol.record)
    # Each evaluated user's metric values, for paired tests and intervals over users:
    # {"users": [tokens], "values": {"ndcg@10": array, ...}}, row i of every array being users[i].
    per_user: dict[str, dict] = field(default_factory=dict)


def train(
    model,
    dataset,
    config_file_list=None,
    config_dict=None,
    saved: bool = True,
    protocols: list | None = None,
    in_progress: bool = False,
) -> Trained:
    """Build config, data and model, and fit with validation-based early stopping.

    Everything that can be checked without training is checked first: config, data files, the
    test `protocols` (default: the config's `candidates`) against the model, the model's own
    settings (`check_config`), and every test candidate list is drawn before the first epoch.
    Models without trainable parameters (zero-shot rankers) or with `epochs: 0` skip fitting.
    `in_progress`: fit nothing; take the best weights so far of the same run's unfinished training
    from its resume state (a long schedule tested between its sessions).
    """
    config = Config(model, dataset, config_file_list, config_dict)
    prepare_dataset_files(config)
    protocols = resolve_protocols(config, protocols)
    check_model_config = getattr(config.model_class, "check_config", None)
    if check_model_config is not None:
        check_model_config(config)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    split = load_split(config, graded_protocol(protocols))
    attach_validation_protocol(config, split)
    retrieve = _retriever(config, saved)
    test_loaders = {p.label: build_test_loader(config, split, p, retrieve) for p in protocols}
    adapt = getattr(config.model_class, "adapt_train_loader", None)  # e.g. all-position training
    if adapt is not None:
        split.train = adapt(config, split.train)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    # config.model_class, not config["model"]: "recbole.Pop" must not become the plugin's Pop.
    model = config.model_class(config, split.train._dataset).to(config["device"])
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config.model_class)(config, model)
    best_valid, epochs_run, start = None, 0, time.perf_counter()
    if in_progress:
        best_valid, epochs_run = trainer.load_progress()
    elif config["epochs"] > 0 and any(p.requires_grad for p in model.parameters()):
        with torch.autograd.set_detect_anomaly(bool(config["detect_anomaly"])):
            _, best_valid = trainer.fit(
                split.train, split.valid, saved=saved, show_progress=config["show_progress"]
            )
        epochs_run = len(trainer.train_loss_dict)
        if saved:
            with trusted_checkpoints():
                checkpoint = torch.load(trainer.saved_model_file, map_location=config["device"])
            model.load_state_dict(checkpoint["state_dict"])
            model.load_other_parameter(checkpoint.get("other_parameter"))
    # A resumed fit also counts the time its killed predecessor spent on the epochs it took over.
    fit_seconds = 0.0 if in_progress else time.perf_counter() - start
    train_seconds = fit_seconds + getattr(trainer, "seconds_before_resume", 0.0)
    return Trained(
        config, split, model, trainer, best_valid, epochs_run, train_seconds, test_loaders, protocols
    )


# What a retriever shares with the run that asks for it: data, split and evaluation settings, never
# the asking model's training settings (an LLM ranker's `epochs: 0` must not leave it untrained).
_SHARED_WITH_RETRIEVER = (
    set(dataset_arguments)
    | set(general_arguments)
    | {"eval_args", "metrics", "topk", "valid_metric", "eval_batch_size", "mask_history"}
)


def stage_config(config: Config, overrides: dict) -> dict:
    """Config of a model trained for this run (a retriever, a pipeline stage): the run's shared
    settings plus `overrides`."""
    given = {**config.file_config_dict, **config.variable_config_dict}
    shared = {k: v for k, v in given.items() if k in _SHARED_WITH_RETRIEVER}
    return {**shared, **overrides}


def retriever_config(config: Config, protocol: Retriever) -> dict:
    """Config of the retriever model: the run's shared settings plus `protocol.retriever_config`."""
    return stage_config(config, protocol.retriever_config)


def _retriever(config: Config, saved: bool):
    """The `retrieve` callback of the retriever protocol: fit the named model on the same data."""

    def retrieve(protocol: Retriever, user_tokens: list[str]) -> list[list[str]]:
        other = train(protocol.model, config["dataset"], None, retriever_config(config, protocol), saved)
        ds, split = other.split.dataset, other.split
        wanted = np.asarray(ds.token2id(ds.uid_field, user_tokens), dtype=np.int64)
        history = split.history("test")
        batch_size = other.config["eval_batch_size"]
        users, scores = score_loader(other.model, split.test, batch_size, protocol.size, history)
        row_of = {int(u): r for r, u in enumerate(users)}
        scores = scores[[row_of[int(u)] for u in wanted]].numpy()
        rng = np.random.default_rng(protocol.seed)
        positives = group_by_user(*split.test_pairs)
        top = top_n(scores, history, wanted, positives, protocol.size, protocol.include_ground_truth, rng)
        return [list(r) for r in ds.id2token(ds.iid_field, top)]

    return retrieve


def evaluate(trained: Trained, protocols: list | None = None, saved: bool = True) -> RunResult:
    """Test the trained model under each protocol (default: those it was trained for).

    `protocols` may be Protocol objects or `candidates` blocks (parsed with the run's eval_users/seed).
    """
    config = trained.config
    chosen = trained.protocols if protocols is None else resolve_protocols(config, protocols)
    held, wanted = (graded_protocol(p) for p in (trained.protocols, chosen))
    if (held and (held.history, held.size)) != (wanted and (wanted.history, wanted.size)):
        raise RecBoleLLMError(
            "A graded protocol changes the split: evaluate it only on a model trained with the same "
            "graded history and size, and other protocols only on a model trained without one."
        )
    result = RunResult(trained)
    for protocol in chosen:
        label = protocol.label
        loader = trained.test_loaders.get(label)
        if loader is None:
            loader = build_test_loader(config, trained.split, protocol, _retriever(config, saved))
            trained.test_loaders[label] = loader
        start = time.perf_counter()
        metrics = trained.trainer.evaluate(
            loader, load_best_model=False, show_progress=config["show_progress"]
        )
        result.eval_seconds[label] = time.perf_counter() - start
        result.test[label] = dict(metrics)
        result.n_users[label] = loader.protocol.n_users
        result.lists[label] = loader.protocol.record()
        result.per_user[label] = _per_user(trained)
        report = getattr(trained.model, "evaluation_report", None)
        if report is not None:
            result.reports[label] = report()
            getLogger().info(f"cost and parsing [{label}]: {result.reports[label]}")
        getLogger().info(f"test result [{label}]: {dict(metrics)}")
    return result


def _per_user(trained: Trained) -> dict:
    """The last evaluation's per-user values, keyed by user token: the one key that stays the same
    across runs, so two runs on the same lists pair user by user."""
    ids, values = trained.trainer.per_user()
    ds = trained.split.dataset
    return {"users": [str(u) for u in ds.id2token(ds.uid_field, ids)], "values": values}


def run(
    model, dataset, config_file_list=None, config_dict=None, protocols=None, saved: bool = True
) -> RunResult:
    """Train `model` on `dataset` and evaluate it under each protocol."""
    trained = train(model, dataset, config_file_list, config_dict, saved, protocols)
    return evaluate(trained, None, saved)
