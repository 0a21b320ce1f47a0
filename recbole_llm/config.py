"""RecBole's Config with the plugin's defaults, overriding only RecBole's hooks."""

from __future__ import annotations

import os
from pathlib import Path

from recbole.config import Config as RecBoleConfig

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.registry import get_model


def _properties_dir() -> Path:
    """YAML defaults: inside the package when installed from a wheel, else the checkout's."""
    packaged = Path(__file__).with_name("properties")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "properties"


PROPERTIES = _properties_dir()


def plugin_yaml_files(model_class: type, dataset: str) -> list[Path]:
    """The plugin's YAML defaults for a run, least specific first.

    Walking the MRO base-first gives a subclass its parents' defaults, overridden by its own. A
    class outside recbole_llm can bring its defaults through a `yaml_file` class attribute.
    """
    files = [PROPERTIES / "overall.yaml"]
    for cls in reversed(model_class.__mro__):
        own = cls.__dict__.get("yaml_file")
        if own:
            files.append(Path(own))
        elif cls.__module__.startswith("recbole_llm."):
            files.append(PROPERTIES / "model" / f"{cls.__name__}.yaml")
    files.append(PROPERTIES / "dataset" / f"{dataset}.yaml")
    return [f for f in files if f.is_file()]


def _check_types(given: dict, defaults: dict) -> None:
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


class Config(RecBoleConfig):
    """Plugin-aware configuration: plugin models resolve and get their YAML defaults.

    Unlike RecBole's, it never reads `sys.argv`: the command line is parsed by the CLI and passed
    in as `config_dict`, so library use and tests see exactly what they pass.
    """

    def _load_cmd_line(self):
        return {}

    def _get_model_and_dataset(self, model, dataset):
        model = model if model is not None else self.external_config_dict.get("model")
        dataset = dataset if dataset is not None else self.external_config_dict.get("dataset")
        if model is None or dataset is None:
            raise RecBoleLLMError("Both `model` and `dataset` must be given (e.g. --model=SASRec).")
        return super()._get_model_and_dataset(get_model(model), dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for path in plugin_yaml_files(model_class, dataset):
            self._update_internal_config_dict(path)

    def _set_default_parameters(self):
        _check_types(self.external_config_dict, self.internal_config_dict)
        # Full-softmax CE uses no sampled negatives; RecBole 1.2.1 rejects its own global default.
        final = self.final_config_dict
        if final.get("loss_type") == "CE" and "train_neg_sample_args" not in self.external_config_dict:
            final["train_neg_sample_args"] = None
        try:
            super()._set_default_parameters()
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as err:
            raise RecBoleLLMError(f"Invalid config: {err}") from err
        # RecBole always points ml-100k at its embedded copy; respect a user's own copy.
        user_path = self.external_config_dict.get("data_path")
        if user_path and os.path.isdir(os.path.join(user_path, self.dataset)):
            self.final_config_dict["data_path"] = os.path.join(user_path, self.dataset)
