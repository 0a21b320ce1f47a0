import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from recbole.model.general_recommender import Pop

from recbole_llm import registry
from recbole_llm.config import Config
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.models.sequential.sasrec import SASRec
from recbole_llm.quick_start import train
from recbole_llm.yaml_files import RECBOLE_PROPERTIES


@pytest.fixture
def family(tmp_path, monkeypatch):
    """Parent with YAML, child overriding one key, grandchild with no YAML of its own."""
    monkeypatch.setattr(registry, "_registered", {})
    parent_yaml = tmp_path / "Parent.yaml"
    parent_yaml.write_text("alpha: 1\nbeta: 2\nepochs: 7\n")
    child_yaml = tmp_path / "Child.yaml"
    child_yaml.write_text("beta: 3\n")

    class Parent(Pop):
        yaml_file = str(parent_yaml)

    class Child(Parent):
        yaml_file = str(child_yaml)

    class GrandChild(Child):
        pass

    for cls in (Parent, Child, GrandChild):
        registry.register_model(cls)
    return Parent, Child, GrandChild


def test_subclass_inherits_parent_yaml_and_overrides_it(family, tiny):
    config = Config("GrandChild", "tiny", config_dict=tiny)
    assert (config["alpha"], config["beta"]) == (1, 3)
    assert Config("Parent", "tiny", config_dict=tiny)["beta"] == 2


def test_user_values_beat_yaml_defaults(family, tiny):
    config = Config("GrandChild", "tiny", config_dict={**tiny, "beta": 10})
    assert config["beta"] == 10
    assert config["epochs"] == 1  # from the test's config, over Parent.yaml's 7


def test_plugin_protocol_defaults_apply_to_every_model(tiny):
    for model in ("Pop", "SASRec"):
        config = Config(model, "tiny", config_dict=tiny)
        assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
        assert config["eval_args"]["order"] == "TO"
        assert config["candidates"] == {"type": "full"}


def test_sasrec_with_ce_needs_no_negative_sampling_setting(tiny):
    assert Config("SASRec", "tiny", config_dict=tiny)["train_neg_sample_args"]["distribution"] == "none"


def test_config_ignores_the_process_command_line(tiny, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--epochs=99"])
    assert Config("Pop", "tiny", config_dict=tiny)["epochs"] == 1


def test_wrong_value_types_fail_in_one_line(tiny):
    with pytest.raises(RecBoleLLMError, match="epochs='abc' should be of type int"):
        Config("Pop", "tiny", config_dict={**tiny, "epochs": "abc"})
    with pytest.raises(RecBoleLLMError, match="no metric named"):
        Config("Pop", "tiny", config_dict={**tiny, "metrics": ["NoSuchMetric"]})


def test_ml100k_resolves_to_the_copy_inside_the_recbole_wheel():
    import recbole

    config = Config("Pop", "ml-100k", config_dict={"state": "WARNING"})
    expected = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k")
    assert os.path.realpath(config["data_path"]) == os.path.realpath(expected)
    assert os.path.isfile(os.path.join(config["data_path"], "ml-100k.inter"))


@pytest.mark.parametrize(
    "key, value, ok",
    [
        ("learning_rate", 1, True),
        ("learning_rate", "fast", False),
        ("epochs", 2.5, False),
        ("show_progress", 1, False),
        ("show_progress", False, True),
        ("epochs", True, False),
    ],
)
def test_scalar_type_rules(tiny, key, value, ok):
    if ok:
        assert Config("Pop", "tiny", config_dict={**tiny, key: value})[key] == value
    else:
        with pytest.raises(RecBoleLLMError, match=f"{key}="):
            Config("Pop", "tiny", config_dict={**tiny, key: value})


class MySASRec(SASRec):
    """Empty subclass, as docs/adding-a-model.md shows: it must keep every parent's defaults."""


def test_empty_subclass_inherits_recbole_and_plugin_defaults_and_trains(tiny, monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})
    registry.register_model(MySASRec)
    recbole_sasrec = yaml.safe_load((RECBOLE_PROPERTIES / "model" / "SASRec.yaml").read_text())
    config = Config("MySASRec", "tiny", config_dict=tiny)
    for key in ("n_layers", "n_heads", "hidden_dropout_prob", "hidden_act"):
        assert config[key] == recbole_sasrec[key], key
    assert config["sce_alpha"] == 100.0  # the plugin's NextItemModel.yaml
    trained = train("MySASRec", "tiny", config_dict={**tiny, "loss_type": "SCE"}, saved=False)
    assert trained.epochs_run == 1 and trained.model.loss_type == "SCE"


@pytest.fixture
def module_with_yaml(tmp_path, monkeypatch):
    """A model defined in its own module file, its `yaml_file` relative to that module's folder."""
    monkeypatch.setattr(registry, "_registered", {})
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "my_pop.yaml").write_text("gamma: 0.25\nepochs: 3\n")
    (folder / "my_models.py").write_text(
        "from recbole_llm.models.general.pop import Pop\n\n\n"
        "class MyPop(Pop):\n    yaml_file = 'my_pop.yaml'\n\n\n"
        "class Lost(Pop):\n    yaml_file = 'no_such.yaml'\n"
    )
    spec = importlib.util.spec_from_file_location("my_models", folder / "my_models.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "my_models", module)
    spec.loader.exec_module(module)
    registry.register_model(module.MyPop)
    registry.register_model(module.Lost)
    return folder


def test_yaml_file_is_found_next_to_its_module_from_any_directory(module_with_yaml, tiny):
    assert not (Path.cwd() / "my_pop.yaml").exists()
    config = Config("MyPop", "tiny", config_dict={k: v for k, v in tiny.items() if k != "epochs"})
    assert (config["gamma"], config["epochs"]) == (0.25, 3)
    assert config["train_neg_sample_args"]["distribution"] == "none", "the plugin Pop's YAML applies too"


def test_missing_yaml_file_is_an_error_naming_class_and_path(module_with_yaml, tiny):
    expected = f"Lost.yaml_file not found: {module_with_yaml / 'no_such.yaml'}"
    with pytest.raises(RecBoleLLMError, match=re.escape(expected)):
        Config("Lost", "tiny", config_dict=tiny)


@pytest.mark.parametrize("model", ["LLMRanker", "EmbeddingRetriever"])
def test_every_model_that_builds_an_llm_declares_what_the_hf_backend_reads(model, tiny, monkeypatch):
    """A key missing from a model's YAML reaches the backend as None (EmbeddingRetriever's profiles
    once crashed on `llm_autocast`); each model declares every setting the default backend reads."""
    from recbole_llm.llm import factory
    from recbole_llm.llm.backends import hf

    built = {}
    monkeypatch.setattr(hf.HFBackend, "from_config", lambda *args, **kwargs: built.update(kwargs))
    monkeypatch.setattr(factory, "cached", lambda backend, config: backend)
    factory.build_backend(Config(model, "tiny", None, {**tiny, "llm_backend": "hf"}))
    assert isinstance(built["autocast"], bool) and built["dtype"] in ("float32", "bfloat16", "float16")
    assert isinstance(built["batch_size"], int) and built["batch_size"] > 0
