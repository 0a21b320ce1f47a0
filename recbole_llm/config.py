"""RecBole's Config with the plugin's defaults and checks, overriding only RecBole's hooks."""

from __future__ import annotations

import os

from recbole.config import Config as RecBoleConfig

from recbole_llm.config_checks import check_keys, check_types, check_values
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.registry import get_model
from recbole_llm.yaml_files import PROPERTIES, default_yaml_files, read_yaml_mapping

__all__ = ["PROPERTIES", "Config"]


class Config(RecBoleConfig):
    """Plugin-aware configuration: plugin models resolve and get their YAML defaults.

    Unlike RecBole's, it never reads `sys.argv`: the command line is parsed by the CLI and passed
    in as `config_dict`, so library use and tests see exactly what they pass.
    """

    def _load_cmd_line(self):
        return {}

    def _load_config_files(self, file_list):
        merged: dict = {}
        for path in file_list or []:
            merged.update(read_yaml_mapping(path, self.yaml_loader))
        return merged

    def _update_internal_config_dict(self, file):
        config_dict = read_yaml_mapping(file, self.yaml_loader)
        self.internal_config_dict.update(config_dict)
        return config_dict

    def _get_model_and_dataset(self, model, dataset):
        model = model if model is not None else self.external_config_dict.get("model")
        dataset = dataset if dataset is not None else self.external_config_dict.get("dataset")
        if model is None or dataset is None:
            raise RecBoleLLMError("Both `model` and `dataset` must be given (e.g. --model=SASRec).")
        return super()._get_model_and_dataset(get_model(model), dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for path in default_yaml_files(model_class, dataset):
            self._update_internal_config_dict(path)

    def _set_default_parameters(self):
        given, defaults, final = self.external_config_dict, self.internal_config_dict, self.final_config_dict
        check_types(given, defaults)
        check_keys(given, defaults, strict=final.get("strict") is True)
        check_values(final)
        # Full-softmax CE uses no sampled negatives; RecBole 1.2.1 rejects its own global default.
        if final.get("loss_type") == "CE" and "train_neg_sample_args" not in given:
            final["train_neg_sample_args"] = None
        try:
            super()._set_default_parameters()
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as err:
            raise RecBoleLLMError(f"Invalid config: {err}") from err
        # RecBole always points ml-100k at its embedded copy; respect a user's own copy.
        user_path = given.get("data_path")
        if user_path and os.path.isdir(os.path.join(user_path, self.dataset)):
            self.final_config_dict["data_path"] = os.path.join(user_path, self.dataset)
