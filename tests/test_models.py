import numpy as np
import pytest

from recbole_llm.models.general.pop import Pop
from recbole_llm.quick_start import train
from recbole_llm.registry import get_model

WITH_NEGATIVES = {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}


def counts(trained):
    ds = trained.split.train._dataset
    exact = np.bincount(ds.inter_feat[ds.iid_field].numpy(), minlength=ds.item_num)
    return trained.model.item_cnt.squeeze(1).numpy(), exact


@pytest.mark.parametrize("extra", [{}, WITH_NEGATIVES])
def test_plugin_pop_counts_every_training_interaction_once(tiny, extra):
    assert get_model("Pop") is Pop
    model_counts, exact = counts(train("Pop", "tiny", config_dict={**tiny, "train_batch_size": 16, **extra}))
    assert (model_counts == exact).all()


@pytest.mark.parametrize(
    "extra, wrong", [({"train_neg_sample_args": None}, "under"), (WITH_NEGATIVES, "over")]
)
def test_recbole_pop_miscounts(tiny, extra, wrong):
    trained = train("recbole.Pop", "tiny", config_dict={**tiny, "train_batch_size": 16, **extra})
    assert type(trained.model) is not Pop
    model_counts, exact = counts(trained)
    assert (model_counts.sum() < exact.sum()) if wrong == "under" else (model_counts.sum() > exact.sum())
