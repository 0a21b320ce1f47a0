"""Per-user metric values: each user's own value (checked by hand), keyed by user token, averaging to
exactly the reported metrics."""

import math

import pytest
import torch

from recbole_llm.config import Config
from recbole_llm.evaluation.per_user import topk_per_user
from recbole_llm.evaluation.ties import TieAwareCollector
from recbole_llm.quick_start import run


def test_per_user_values_of_a_hand_built_ranking(tiny):
    settings = {**tiny, "topk": [1, 5], "metrics": ["NDCG", "MRR", "ItemCoverage"]}
    config = Config("Pop", "tiny", config_dict=settings)
    scores = torch.full((2, 21), 0.1)
    scores[0, [4, 9]] = 0.9  # two items above user 0's positive
    scores[0, [5, 6]] = 0.5  # its positive (5) ties with item 6: rank 4
    scores[1, 3] = 1.0  # user 1's positive ranks first
    collector = TieAwareCollector(config)
    collector.eval_batch_collect(scores, None, torch.tensor([0, 1]), torch.tensor([5, 3]))
    collector.get_data_struct()
    values = topk_per_user(config, collector.last_struct)
    assert set(values) == {"ndcg@1", "ndcg@5", "mrr@1", "mrr@5"}, "coverage is not a mean over users"
    assert values["ndcg@5"].tolist() == pytest.approx([1 / math.log2(5), 1.0])
    assert values["mrr@5"].tolist() == pytest.approx([0.25, 1.0])
    assert values["ndcg@1"].tolist() == [0.0, 1.0]


def pessimistic_ndcg(counts, candidates, truth, k):
    """Reference: NDCG@k of the ground truth among its candidates ranked by popularity, ties above it."""
    rank = int((counts[candidates] >= counts[truth]).sum())
    return 1 / math.log2(rank + 1) if rank <= k else 0.0


def test_pop_per_user_values_are_each_users_ndcg_and_average_to_the_metrics(tiny):
    config = {**tiny, "candidates": {"type": "uniform", "size": 6}, "eval_users": 10}
    result = run("Pop", "tiny", config_dict=config, saved=False)
    (label,) = result.test
    per_user = result.per_user[label]
    users = per_user["users"]
    assert len(users) == len(set(users)) == result.n_users[label] == 10
    assert set(per_user["values"]) == set(result.test[label])
    for metric, value in result.test[label].items():
        assert round(float(per_user["values"][metric].mean()), 4) == value, metric

    trained = result.trained
    ds = trained.split.dataset
    counts = trained.model.item_cnt.squeeze(1)
    candidates = trained.test_loaders[label].protocol.candidates
    truth = dict(zip(*(p.tolist() for p in trained.split.test_pairs)))
    ids = ds.token2id(ds.uid_field, users)
    want = [pessimistic_ndcg(counts, candidates[u], truth[int(u)], 5) for u in ids]
    assert per_user["values"]["ndcg@5"].tolist() == pytest.approx(want)


def test_full_ranking_per_user_values_average_to_the_metrics(tiny):
    result = run("SASRec", "tiny", config_dict=tiny, saved=False)
    per_user = result.per_user["full"]
    assert len(per_user["users"]) == result.n_users["full"] == 12
    for metric, value in result.test["full"].items():
        assert round(float(per_user["values"][metric].mean()), 4) == value, metric
