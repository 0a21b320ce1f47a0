"""TwoStage on the tiny dataset, against ranks computed by hand from the retriever's order."""

import math

import numpy as np
import pytest

import recbole_llm.quick_start as quick_start
import recbole_llm.registry as registry
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.quick_start import evaluate, train
from tests.plugin_models import FirstSlotWins, ItemIdScorer, SequenceOracle

TOP_K = 5
UNTRAINED = {"epochs": 0}  # the plugin test models score without training


class ReversedItemIdScorer(ItemIdScorer):
    """Ranks by descending id what ItemIdScorer ranks by ascending id; scored row by row (`predict`)."""

    def _score(self, items):
        return -items.float()


@pytest.fixture(autouse=True)
def test_models(monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})
    for cls in (ItemIdScorer, ReversedItemIdScorer, SequenceOracle, FirstSlotWins):
        registry.register_model(cls)


def two_stage(tiny, retriever="ItemIdScorer", ranker="SequenceOracle", **settings) -> dict:
    stages = {"retriever_config": UNTRAINED, "ranker_config": UNTRAINED}
    return {**tiny, **stages, "retriever": retriever, "ranker": ranker, "top_k": TOP_K, **settings}


def retriever_ranks(trained) -> list[int]:
    """Each test case's ground-truth rank under ItemIdScorer: higher unseen ids come first."""
    history = trained.split.history("test")
    ranks = []
    for user, gt in zip(*trained.split.test_pairs):
        seen = set(history[user].indices)
        ranks.append(1 + sum(1 for i in range(gt + 1, trained.split.n_items) if i not in seen))
    return ranks


def expected_ndcg(ranks: list[int], k: int) -> float:
    return float(np.mean([1 / math.log2(r + 1) if r <= k else 0.0 for r in ranks]))


@pytest.mark.parametrize(
    ("ranker", "reranked"),
    [
        ("SequenceOracle", lambda r: 1),  # predict_candidates: the ground truth wins its list
        ("ReversedItemIdScorer", lambda r: TOP_K + 1 - r),  # predict rows: the top-k reversed
    ],
)
def test_reranked_top_k_first_then_the_retrievers_order(tiny, ranker, reranked):
    trained = train("TwoStage", "tiny", config_dict=two_stage(tiny, ranker=ranker))
    result = evaluate(trained)
    ranks = [reranked(r) if r <= TOP_K else r for r in retriever_ranks(trained)]
    metrics = result.test["full"]
    for k in (1, 5, 10, 20):
        assert metrics[f"ndcg@{k}"] == pytest.approx(expected_ndcg(ranks, k), abs=1e-4)
        assert metrics[f"recall@{k}"] == pytest.approx(np.mean([r <= k for r in ranks]), abs=1e-4)


def test_report_has_the_retrievers_recall_and_both_stages_costs(tiny):
    trained = train("TwoStage", "tiny", config_dict=two_stage(tiny))
    report = evaluate(trained).reports["full"]
    ranks = retriever_ranks(trained)
    assert report[f"retriever_recall@{TOP_K}"] == pytest.approx(np.mean([r <= TOP_K for r in ranks]))
    assert report["users"] == len(ranks)
    stages = report["retriever_seconds_per_user"] + report["ranker_seconds_per_user"]
    assert report["seconds_per_user"] == pytest.approx(stages)


def test_ranker_that_is_the_retriever_changes_nothing(tiny):
    alone = evaluate(train("ItemIdScorer", "tiny", config_dict=tiny)).test["full"]
    config = two_stage(tiny, ranker="ItemIdScorer", ranker_config=UNTRAINED)
    assert evaluate(train("TwoStage", "tiny", config_dict=config)).test["full"] == pytest.approx(alone)


def test_stages_loaded_from_a_checkpoint(tiny):
    """A trained BPR re-ranking its own top-k equals BPR alone only if its weights were loaded."""
    bpr = train("BPR", "tiny", config_dict={**tiny, "epochs": 3})
    alone = evaluate(bpr).test["full"]
    path = bpr.trainer.saved_model_file
    config = two_stage(tiny, "BPR", "BPR", retriever_checkpoint=path, ranker_checkpoint=path)
    assert evaluate(train("TwoStage", "tiny", config_dict=config)).test["full"] == pytest.approx(alone)
    wrong = two_stage(tiny, "ItemIdScorer", "BPR", retriever_checkpoint=path)
    with pytest.raises(RecBoleLLMError, match="holds a BPR model, not ItemIdScorer"):
        train("TwoStage", "tiny", config_dict=wrong)


def test_a_trained_stage_is_reused_by_pipelines_that_train_it_alike(tiny, monkeypatch):
    from recbole.trainer import Trainer

    fits = []
    original_fit = Trainer.fit

    def counting_fit(self, *args, **kwargs):
        fits.append(type(self.model).__name__)
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", counting_fit)
    bpr = {"epochs": 2}
    first = two_stage(tiny, "BPR", "ReversedItemIdScorer", retriever_config=bpr)
    scores = evaluate(train("TwoStage", "tiny", config_dict=first)).test["full"]
    assert fits == ["BPR"]
    # Another ranker on the same retriever: the BPR trained above is loaded, not trained again.
    second = two_stage(tiny, "BPR", "SequenceOracle", retriever_config=bpr)
    evaluate(train("TwoStage", "tiny", config_dict=second))
    assert fits == ["BPR"]
    again = evaluate(train("TwoStage", "tiny", config_dict=first)).test["full"]
    assert again == pytest.approx(scores)
    # A setting that changes training trains it anew; so does switching the cache off.
    evaluate(train("TwoStage", "tiny", config_dict={**first, "retriever_config": {"epochs": 3}}))
    evaluate(train("TwoStage", "tiny", config_dict={**first, "stage_cache_dir": None}))
    assert fits == ["BPR", "BPR", "BPR"]


def test_shown_order_matters_only_when_not_shuffled(tiny):
    """A ranker that always picks the first item shown keeps the retrieved order unless shuffled; no
    reordering inside the top-k changes what lies beyond it."""
    alone = evaluate(train("ItemIdScorer", "tiny", config_dict=tiny)).test["full"]
    fixed = two_stage(tiny, ranker="FirstSlotWins", shuffle_candidates=False)
    assert evaluate(train("TwoStage", "tiny", config_dict=fixed)).test["full"] == pytest.approx(alone)
    shuffled = evaluate(train("TwoStage", "tiny", config_dict={**fixed, "shuffle_candidates": True}))
    for k in (5, 10, 20):
        assert shuffled.test["full"][f"recall@{k}"] == pytest.approx(alone[f"recall@{k}"])


def test_an_llm_ranker_reranks_and_its_cost_joins_the_report(tiny):
    """An LLM that always prefers the first item shown, shown the retrieved order: nothing moves."""
    from tests.llm_fixtures import FirstShownWins

    alone = evaluate(train("ItemIdScorer", "tiny", config_dict=tiny)).test["full"]
    llm = {
        "llm_backend": FirstShownWins(),
        "ranking_mode": "verbalizer",
        "item_text": "{title}",
        "no_cache": True,
    }
    config = two_stage(tiny, ranker="LLMRanker", ranker_config=llm, shuffle_candidates=False)
    result = evaluate(train("TwoStage", "tiny", config_dict=config))
    assert result.test["full"] == pytest.approx(alone)
    report = result.reports["full"]
    assert report["requests"] == report["users"] == len(result.trained.split.test_pairs[0])
    assert report["llm_calls"] == report["users"] and report["tokens_per_user"] > 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"retriever": "ItemIdScorr"}, "retriever: Unknown model 'ItemIdScorr'. Did you mean: ItemIdScorer"),
        ({"ranker": None}, "TwoStage needs a ranker model name"),
        ({"top_k": 0}, "top_k must be a positive integer"),
        ({"candidates": {"type": "uniform", "size": 8}}, "ranks every item.*'uniform8-s2020'"),
        ({"retriever": "FirstSlotWins"}, "FirstSlotWins ranks candidate lists only"),
        ({"retriever_checkpoint": "missing.pth"}, "retriever_checkpoint not found"),
        ({"ranker_config": {"MAX_ITEM_LIST_LENGTH": 3}}, "Set MAX_ITEM_LIST_LENGTH for TwoStage"),
    ],
)
def test_config_errors_before_data_loading(tiny, monkeypatch, settings, message):
    def no_data(config):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr(quick_start, "load_split", no_data)
    with pytest.raises(RecBoleLLMError, match=message):
        train("TwoStage", "tiny", config_dict=two_stage(tiny, **settings))


UNIFORM8_BLOCK = {"type": "uniform", "size": 8}


def test_protocols_passed_by_a_suite_are_checked_too(tiny, monkeypatch):
    monkeypatch.setattr(quick_start, "load_split", lambda config: pytest.fail("data loaded"))
    with pytest.raises(RecBoleLLMError, match="TwoStage ranks every item.*'uniform8-s2020'"):
        train(
            "TwoStage",
            "tiny",
            config_dict=two_stage(tiny),
            protocols=["full", {"type": "uniform", "size": 8}],
        )
