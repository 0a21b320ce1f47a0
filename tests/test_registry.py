import importlib.metadata

import pytest
from recbole.model.general_recommender import Pop
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import NCLTrainer, Trainer

from recbole_llm import registry
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.evaluation.trainer import ProtocolEvaluation
from recbole_llm.models.general.pop import Pop as PluginPop
from recbole_llm.models.sequential.gru4rec import GRU4Rec as PluginGRU4Rec
from recbole_llm.registry import get_model, get_trainer, register_model


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})
    registry._entry_point_models.cache_clear()
    yield
    registry._entry_point_models.cache_clear()


def test_recbole_models_resolve_exactly_and_case_insensitively():
    assert get_model("recbole.SASRec") is SASRec
    assert get_model("GRU4Rec") is PluginGRU4Rec and get_model("gru4rec") is PluginGRU4Rec
    assert get_model("recbole.Pop") is Pop
    assert get_model("Pop") is PluginPop, "the plugin's own models come first"


def test_unknown_name_gives_one_error_with_close_matches():
    with pytest.raises(RecBoleLLMError) as err:
        get_model("SASRc")
    assert "Unknown model 'SASRc'" in str(err.value)
    assert "SASRec" in str(err.value)
    with pytest.raises(RecBoleLLMError, match="Unknown model 'Nothing'"):
        get_model("Nothing")


def test_plugin_model_shadows_recbole_and_prefix_reaches_recbole(clean_registry):
    @register_model
    class Pop2(Pop):
        pass

    register_model(Pop2, "Pop")
    assert get_model("Pop") is Pop2
    assert get_model("recbole.Pop") is Pop
    assert "Pop2" in registry.available_models()


def test_entry_point_models_resolve_lazily(clean_registry, monkeypatch):
    ep = importlib.metadata.EntryPoint(
        name="ItemIdScorer", value="tests.plugin_models:ItemIdScorer", group=registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(
        registry.importlib.metadata, "entry_points", lambda: importlib.metadata.EntryPoints([ep])
    )
    from tests.plugin_models import ItemIdScorer

    assert get_model("ItemIdScorer") is ItemIdScorer
    with pytest.raises(RecBoleLLMError, match="Did you mean: ItemIdScorer"):
        get_model("ItemIdScore")


def test_trainers_gain_the_protocol_and_keep_model_specific_ones():
    from recbole.utils import ModelType

    plain = get_trainer(ModelType.SEQUENTIAL, "SASRec")
    assert issubclass(plain, ProtocolEvaluation) and issubclass(plain, Trainer)
    special = get_trainer(ModelType.GENERAL, "NCL")
    assert issubclass(special, ProtocolEvaluation) and issubclass(special, NCLTrainer)
    assert get_trainer(ModelType.SEQUENTIAL, "SASRec") is plain


def test_recbole_model_names_are_listed_without_importing_them_and_all_resolve():
    import subprocess
    import sys

    code = (
        "import sys; from recbole_llm.registry import available_models; names = available_models();"
        "print(len(names), 'recbole.model.general_recommender.bpr' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    count, imported = out.split()
    assert imported == "False", "listing names must not import RecBole's model modules"
    # Independent reference: every model class the packages export, found by importing them.
    from recbole.model import context_aware_recommender as context
    from recbole.model import general_recommender as general
    from recbole.model import knowledge_aware_recommender as knowledge
    from recbole.model import sequential_recommender as sequential
    from recbole.model.abstract_recommender import AbstractRecommender

    exported = {
        name
        for module in (general, context, sequential, knowledge)
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, AbstractRecommender)
    }
    assert exported <= set(registry.available_models()) and int(count) == len(registry.available_models())
    assert get_model("recbole.BPR").__name__ == "BPR"


def test_model_listing_survives_a_closed_pipe():
    """`recbole-llm models | head`: a reader that stops early (`true` reads nothing) is no error."""
    import subprocess
    import sys

    code = "import sys; from recbole_llm.cli import main; sys.exit(main(['models']))"
    shell = f'{sys.executable} -c "{code}" | true; echo ${{PIPESTATUS[0]}}'
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True)
    assert proc.stdout == "0\n" and proc.stderr == ""
