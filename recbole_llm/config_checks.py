"""Checks of a run's config before anything runs: value types, impossible values, unknown keys.

RecBole accepts any key and almost any value: a typo (`eval_user`) is silently ignored and
`epochs: -3` reports an untrained model. Here unknown keys warn (or fail under `strict`), with
the closest known names, and values that cannot work fail in one line.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from functools import lru_cache
from numbers import Real

from recbole_llm.errors import RecBoleLLMError, did_you_mean
from recbole_llm.yaml_files import PROPERTIES, RECBOLE_PROPERTIES, read_yaml_mapping


class UnknownConfigKeyWarning(UserWarning):
    """A config key that no YAML default declares: most likely a typo, and ignored."""


# Keys RecBole 1.2.1 reads (`config[...]` in its source) that none of its YAML files declare.
RECBOLE_KEYS_WITHOUT_DEFAULTS = frozenset(
    {"model", "dataset", "config_files", "local_rank", "nproc", "world_size", "ip", "port", "offset"}
    | {"encoding", "eta", "tail_ratio", "token_num_threshold", "xgb_early_stopping_rounds"}
    | {"cin", "feature_num", "has_residual", "norm", "contrast", "sim", "use_filter"}
)
_NOT_CONFIG = {"url.yaml", "kg_url.yaml"}  # RecBole's: dataset name -> download URL


@lru_cache(maxsize=1)
def shipped_keys() -> frozenset[str]:
    """Every key that RecBole's or the plugin's YAML files, or RecBole's argument lists, declare."""
    from recbole.utils import argument_list  # imports torch: not at import time of the CLI

    files = [f for f in RECBOLE_PROPERTIES.rglob("*.yaml") if f.name not in _NOT_CONFIG]
    files += [PROPERTIES / "overall.yaml", *PROPERTIES.glob("model/*.yaml")]
    files += PROPERTIES.glob("dataset/*.yaml")  # not prompts/: templates, not config keys
    keys = {key for f in files for key in read_yaml_mapping(f)}
    keys.update(argument_list.general_arguments, argument_list.training_arguments)
    keys.update(argument_list.evaluation_arguments, argument_list.dataset_arguments)
    return frozenset(keys | RECBOLE_KEYS_WITHOUT_DEFAULTS)


def check_keys(given: Iterable[str], defaults: dict, strict: bool) -> None:
    """Warn once per key known to no YAML (the run's own defaults included); raise if `strict`."""
    known = shipped_keys() | set(defaults)
    unknown = [key for key in given if key not in known]
    if strict and unknown:
        raise RecBoleLLMError(
            "; ".join(f"unknown config key {k!r} (strict).{did_you_mean(k, known)}" for k in unknown)
        )
    for key in unknown:
        message = f"unknown config key {key!r} (ignored).{did_you_mean(key, known)}"
        warnings.warn(message, UnknownConfigKeyWarning, stacklevel=2)


def check_types(given: dict, defaults: dict) -> None:
    """Reject scalar values of the wrong kind before RecBole fails on them deep inside training."""
    for key, value in given.items():
        default = defaults.get(key)
        if value is None or not isinstance(default, (bool, int, float)):
            continue
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        else:  # an int default takes ints; a float default takes ints and floats
            ok = isinstance(value, int if isinstance(default, int) else (int, float))
        if not ok:
            raise RecBoleLLMError(
                f"Config value {key}={value!r} should be of type {type(default).__name__} "
                f"(default: {default!r})."
            )


def _number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(v: object) -> bool:
    return _integer(v) and v > 0


def non_negative_int(v: object) -> bool:
    return _integer(v) and v >= 0


def positive_number(v: object) -> bool:
    return _number(v) and v > 0


def non_negative_number(v: object) -> bool:
    return _number(v) and v >= 0


def probability(v: object) -> bool:
    return _number(v) and 0 <= v <= 1


def optional(rule: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or rule(v)


def positive_ints(v: object) -> bool:
    return positive_int(v) or (isinstance(v, list) and bool(v) and all(map(positive_int, v)))


# key -> (rule, what the rule asks for); checked wherever the value comes from. Values whose
# validity depends on other settings (num_negatives, bootstrap) are checked by their models.
RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "epochs": (non_negative_int, "a non-negative integer (0: no training)"),
    "train_batch_size": (positive_int, "a positive integer"),
    "train_examples_per_epoch": (optional(positive_int), "a positive integer or null (every example)"),
    "gradient_accumulation_steps": (positive_int, "a positive integer (1: a step per batch)"),
    "eval_batch_size": (positive_int, "a positive integer"),
    "learning_rate": (positive_number, "a positive number"),
    "weight_decay": (non_negative_number, "a non-negative number"),
    "eval_step": (non_negative_int, "a non-negative integer (0: no validation)"),
    "stopping_step": (non_negative_int, "a non-negative integer"),
    "topk": (positive_ints, "a positive integer or a list of them"),
    "eval_users": (optional(positive_int), "a positive integer or null (all users)"),
    "worker": (non_negative_int, "a non-negative integer"),
    "MAX_ITEM_LIST_LENGTH": (positive_int, "a positive integer"),
    "embedding_size": (positive_int, "a positive integer"),
    "hidden_size": (positive_int, "a positive integer"),
    "inner_size": (positive_int, "a positive integer"),
    "n_layers": (positive_int, "a positive integer"),
    "n_heads": (positive_int, "a positive integer"),
    "num_layers": (positive_int, "a positive integer"),
    "dropout_prob": (probability, "a probability in [0, 1]"),
    "hidden_dropout_prob": (probability, "a probability in [0, 1]"),
    "attn_dropout_prob": (probability, "a probability in [0, 1]"),
    "max_his_len": (positive_int, "a positive integer"),
    "max_new_tokens": (positive_int, "a positive integer"),
    "llm_batch_size": (positive_int, "a positive integer"),
    "llm_max_concurrency": (positive_int, "a positive integer"),
    "pairwise_window": (optional(positive_int), "a positive integer or null (all pairs)"),
    "train_num_negatives": (positive_int, "a positive integer"),
    "lora_r": (positive_int, "a positive integer"),
    "lora_alpha": (positive_number, "a positive number"),
    "lora_dropout": (probability, "a probability in [0, 1]"),
}


def check_values(config: dict) -> None:
    """Fail on the first value that cannot work (e.g. `epochs: -3` would report an untrained model)."""
    for key, (rule, wanted) in RULES.items():
        if key in config and not rule(config[key]):
            raise RecBoleLLMError(f"{key} must be {wanted}, got {config[key]!r}.")
