"""The evaluation path end to end on a tiny dataset, against ranks computed by hand."""

import math

import numpy as np
import pytest

import recbole_llm.registry as registry
from recbole_llm.data.candidates import CandidateSet
from recbole_llm.data.protocol import group_by_user
from recbole_llm.data.protocols import parse_protocol
from recbole_llm.quick_start import evaluate, train
from tests.plugin_models import ConstantScorer, ItemIdScorer, SequenceOracle

UNIFORM8 = {"type": "uniform", "size": 8}
U8 = "uniform8-s2020"


@pytest.fixture(autouse=True)
def test_models(monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})
    for cls in (ItemIdScorer, ConstantScorer, SequenceOracle):
        registry.register_model(cls)


def expected_ndcg(ranks: list[int], k: int) -> float:
    return float(np.mean([1 / math.log2(r + 1) if r <= k else 0.0 for r in ranks]))


def stored_candidates(tmp_path, pattern="*.tsv") -> CandidateSet:
    files = list((tmp_path / "candidates" / "tiny").glob(pattern))
    assert len(files) == 1
    return CandidateSet.read(files[0])


def test_item_id_scorer_on_candidates_matches_hand_computed_ranks(tiny, tmp_path):
    trained = train("ItemIdScorer", "tiny", config_dict=tiny)
    metrics = evaluate(trained, [UNIFORM8]).test[U8]
    ds = trained.split.dataset
    truth = group_by_user(*trained.split.test_pairs)
    cs = stored_candidates(tmp_path)
    ranks = []
    for user, items in zip(cs.users, cs.items):
        gt = truth[int(ds.token2id(ds.uid_field, user))][0]
        ids = ds.token2id(ds.iid_field, items)
        assert gt in ids
        ranks.append(1 + int((ids > gt).sum()))
    for k in (1, 5, 10):
        assert metrics[f"ndcg@{k}"] == pytest.approx(expected_ndcg(ranks, k), abs=1e-4)


def test_item_id_scorer_in_full_ranking_with_history_masked(tiny):
    trained = train("ItemIdScorer", "tiny", config_dict=tiny)
    metrics = evaluate(trained, ["full"]).test["full"]
    history = trained.split.history("test")
    ranks = []
    for user, gt in zip(*trained.split.test_pairs):
        seen = set(history[user].indices)
        assert gt not in seen
        ranks.append(1 + sum(1 for i in range(gt + 1, trained.split.n_items) if i not in seen))
    assert metrics["ndcg@10"] == pytest.approx(expected_ndcg(ranks, 10), abs=1e-4)
    unmasked = evaluate(train("ItemIdScorer", "tiny", config_dict={**tiny, "mask_history": False}))
    assert unmasked.test["full"]["ndcg@10"] <= metrics["ndcg@10"]


def test_constant_scorer_gains_nothing_from_ties(tiny):
    metrics = evaluate(train("ConstantScorer", "tiny", config_dict=tiny), [UNIFORM8]).test[U8]
    assert metrics["ndcg@5"] == 0.0 and metrics["recall@5"] == 0.0
    assert metrics["recall@10"] == 1.0, "the ground truth is still among the 8 candidates"


def test_list_rankers_score_through_predict_candidates(tiny):
    result = evaluate(train("SequenceOracle", "tiny", config_dict=tiny), [UNIFORM8, "full"])
    assert result.test[U8]["ndcg@1"] == 1.0
    assert result.test["full"]["ndcg@1"] == 1.0


def test_every_model_ranks_the_same_stored_lists(tiny, tmp_path):
    general = train("ItemIdScorer", "tiny", config_dict=tiny)
    evaluate(general, [UNIFORM8])
    first = stored_candidates(tmp_path)
    sequential = train("SequenceOracle", "tiny", config_dict=tiny)
    evaluate(sequential, [UNIFORM8])
    assert stored_candidates(tmp_path) == first, "one set per (dataset, split, protocol, seed)"
    evaluate(train("ItemIdScorer", "tiny", config_dict={**tiny, "seed": 7}), [UNIFORM8])
    assert len(list((tmp_path / "candidates" / "tiny").glob("*.tsv"))) == 2


def test_seeded_user_subset(tiny):
    def users(seed):
        result = evaluate(train("ItemIdScorer", "tiny", config_dict={**tiny, "eval_users": 5, "seed": seed}))
        assert result.n_users[f"full-5u-s{seed}"] == 5
        return result

    assert users(1).test == users(1).test


def test_candidates_from_a_file_and_from_a_retriever(tiny, tmp_path):
    trained = train("ItemIdScorer", "tiny", config_dict=tiny)
    ds = trained.split.dataset
    truth = group_by_user(*trained.split.test_pairs)
    users = sorted(truth)[:3]
    lines = []
    for u in users:
        gt = truth[u][0]
        others = [i for i in range(1, ds.item_num) if i != gt][:3]
        tokens = ds.id2token(ds.iid_field, [gt, *others])
        lines.append(f"{ds.id2token(ds.uid_field, u)}\t{' '.join(tokens)}\n")
    (tmp_path / "mine.tsv").write_text("".join(lines))
    spec = {"type": "file", "path": str(tmp_path / "mine.tsv")}
    result = evaluate(trained, [spec])
    assert result.n_users["file-mine-s2020"] == 3

    retriever = {"type": "retriever", "model": "Pop", "size": 5}
    evaluate(trained, [retriever])
    cs = stored_candidates(tmp_path, "retriever-*.tsv")
    history = trained.split.history("test")
    for user, items in zip(cs.users, cs.items):
        uid = int(ds.token2id(ds.uid_field, user))
        ids = set(ds.token2id(ds.iid_field, items).tolist())
        assert len(ids) == 5 and truth[uid][0] in ids and not ids & set(history[uid].indices)


def test_retrievers_get_data_settings_but_not_the_asking_models_training_settings(tiny):
    from recbole_llm.quick_start import retriever_config

    trained = train("ItemIdScorer", "tiny", config_dict={**tiny, "epochs": 0, "learning_rate": 5.0})
    spec = parse_protocol({"type": "retriever", "model": "BPR", "size": 5, "retriever_config": {"epochs": 3}})
    config = retriever_config(trained.config, spec)
    assert config["epochs"] == 3 and "learning_rate" not in config
    assert config["data_path"] == tiny["data_path"] and config["load_col"] == tiny["load_col"]


def test_full_protocol_reproduces_recboles_own_full_sort_evaluation(tiny):
    """For a general model RecBole masks train+valid items too; with no ties both must agree."""
    from recbole.trainer import Trainer

    trained = train("BPR", "tiny", config_dict={**tiny, "epochs": 3})
    ours = evaluate(trained, ["full"]).test["full"]
    reference = Trainer(trained.config, trained.model).evaluate(trained.split.test, load_best_model=False)
    assert dict(reference) == pytest.approx(ours, abs=1e-4)
    assert ours["ndcg@20"] > 0
