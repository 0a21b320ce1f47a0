"""Config checks: malformed YAML files, impossible values and unknown keys, before anything runs."""

import re
import warnings
from pathlib import Path

import pytest
import yaml
from recbole.utils import argument_list

import recbole_llm
from recbole_llm.config import Config
from recbole_llm.config_checks import RULES, UnknownConfigKeyWarning, check_keys
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.yaml_files import PROPERTIES, RECBOLE_PROPERTIES


def test_malformed_yaml_names_the_file_and_line(tiny, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 5\nlearning_rate: 0.01\n  train_batch_size: 64\n")  # line 3 over-indented
    with pytest.raises(RecBoleLLMError) as err:
        Config("Pop", "tiny", [str(bad)], tiny)
    message = str(err.value)
    assert message.startswith(f"{bad} line 3: ") and "indentation" in message
    assert "\n" not in message


@pytest.mark.parametrize("text, kind", [("- epochs\n- 5\n", "a list"), ("just words\n", "a string")])
def test_yaml_without_key_value_pairs_is_rejected(tiny, tmp_path, text, kind):
    path = tmp_path / "flat.yaml"
    path.write_text(text)
    expected = f"flat.yaml: expected key: value pairs at the top level, found {kind}$"
    with pytest.raises(RecBoleLLMError, match=expected):
        Config("Pop", "tiny", [str(path)], tiny)


def test_empty_yaml_changes_nothing(tiny, tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert Config("Pop", "tiny", [str(tmp_path / "empty.yaml")], tiny)["epochs"] == tiny["epochs"]


@pytest.mark.parametrize(
    "key, value",
    [
        ("epochs", -3),
        ("train_batch_size", 0),
        ("eval_batch_size", -1),
        ("learning_rate", 0.0),
        ("learning_rate", -0.1),
        ("weight_decay", -1e-4),
        ("topk", 0),
        ("topk", [10, -5]),
        ("eval_users", 0),
        ("MAX_ITEM_LIST_LENGTH", 0),
        ("hidden_dropout_prob", 1.5),
    ],
)
def test_impossible_values_fail_in_one_line(tiny, key, value):
    with pytest.raises(RecBoleLLMError, match=f"^{key} must be .*, got {re.escape(repr(value))}\\.$"):
        Config("SASRec", "tiny", config_dict={**tiny, key: value})


@pytest.mark.parametrize(
    "key, value", [("epochs", 0), ("topk", 5), ("topk", [1, 3]), ("eval_users", None), ("weight_decay", 0)]
)
def test_boundary_values_are_accepted(tiny, key, value):
    expected = [value] if key == "topk" and isinstance(value, int) else value  # RecBole lists a lone k
    assert Config("SASRec", "tiny", config_dict={**tiny, key: value})[key] == expected


def _shipped_defaults():
    recbole_files = [f for f in RECBOLE_PROPERTIES.rglob("*.yaml") if "url" not in f.name]
    for path in [*recbole_files, PROPERTIES / "overall.yaml", *PROPERTIES.glob("model/*.yaml")]:
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            yield path.name, key, value


def test_every_shipped_default_satisfies_the_rules():
    broken = [(f, k, v) for f, k, v in _shipped_defaults() if k in RULES and not RULES[k][0](v)]
    assert not broken


def test_misspelled_key_warns_once_with_the_closest_names(tiny):
    with pytest.warns(UnknownConfigKeyWarning) as caught:
        config = Config("Pop", "tiny", config_dict={**tiny, "eval_user": 5})
    assert len(caught) == 1
    expected = "unknown config key 'eval_user' (ignored). Did you mean: eval_users"
    assert str(caught[0].message).startswith(expected)
    assert config["eval_users"] is None, "the misspelled key does not set the real one"


def test_strict_turns_unknown_keys_into_one_error(tiny):
    expected = r"unknown config key 'eval_user' \(strict\)\. Did you mean: eval_users"
    with pytest.raises(RecBoleLLMError, match=expected):
        Config("Pop", "tiny", config_dict={**tiny, "eval_user": 5, "strict": True})


@pytest.mark.parametrize("model", ["SASRec", "Pop", "BPR", "LLMRanker", "GRU4Rec", "recbole.SASRec"])
def test_real_configs_warn_about_nothing(tiny, model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownConfigKeyWarning)
        Config(model, "tiny", config_dict={**tiny, "strict": True, "eval_users": 5, "topk": [5]})


def test_keys_recbole_accepts_without_yaml_defaults_are_known():
    names = [*argument_list.general_arguments, *argument_list.training_arguments]
    names += [*argument_list.evaluation_arguments, *argument_list.dataset_arguments]
    check_keys([*names, "model", "dataset", "config_files", "benchmark_filename"], {}, strict=True)


def test_every_key_the_plugin_reads_has_a_yaml_default():
    source = "\n".join(p.read_text() for p in Path(recbole_llm.__file__).parent.rglob("*.py"))
    read = set(re.findall(r"config\[[\"'](\w+)[\"']\]", source))
    set_by_recbole = {"MODEL_TYPE", "device", "local_rank", "single_spec"}  # derived by RecBole's Config
    check_keys(sorted(read - set_by_recbole), {}, strict=True)
