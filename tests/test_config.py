import os
import sys

import pytest
from recbole.model.general_recommender import Pop

from recbole_llm import registry
from recbole_llm.config import Config
from recbole_llm.errors import RecBoleLLMError


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
