"""Metrics on hand-built score matrices, through RecBole's evaluator and the tie-aware collector."""

import math

import pytest
import torch
from recbole.evaluator import Collector, Evaluator

from recbole_llm.config import Config
from recbole_llm.evaluation.ties import TieAwareCollector, pessimistic_ranking, pessimistic_topk


@pytest.fixture
def config(tiny):
    return Config("Pop", "tiny", config_dict={**tiny, "topk": [1, 3, 5, 10, 20]})


def evaluate(config, scores, positive_u, positive_i):
    collector = TieAwareCollector(config)
    collector.eval_batch_collect(scores, None, torch.tensor(positive_u), torch.tensor(positive_i))
    return Evaluator(config).evaluate(collector.get_data_struct())


def test_pessimistic_ranking_puts_positives_after_equal_scores():
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 2.0]])
    ranked = pessimistic_ranking(scores, torch.tensor([0]), torch.tensor([2]))
    order = torch.argsort(ranked[0], descending=True).tolist()
    assert order[0] == 4 and order[3] == 2, "positive 2 after tied items 1 and 3"
    nan = pessimistic_ranking(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), torch.tensor([0]))
    assert nan[0, 0] < nan[0, 1], "NaN never wins"


def slow_pessimistic_order(row: list[float], positives: set[int]) -> list[int]:
    """Reference: sort by (NaN last, score descending, non-positive first)."""
    nan = [v != v for v in row]
    return sorted(range(len(row)), key=lambda i: (nan[i], 0.0 if nan[i] else -row[i], i in positives))


def test_pessimistic_ranking_matches_a_slow_lexicographic_sort():
    gen = torch.Generator().manual_seed(0)
    # Few distinct values (many ties), signed zeros, infinities, NaN and tiny magnitudes.
    special = [float("inf"), -float("inf"), float("nan")]
    values = torch.tensor([-2.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 3.0, *special])
    scores = values[torch.randint(0, len(values), (30, 12), generator=gen)]
    positive_u = torch.arange(30).repeat_interleave(2)
    positive_i = torch.randint(0, 12, (60,), generator=gen)
    ranked = pessimistic_ranking(scores, positive_u, positive_i)
    for u in range(30):
        positives = set(positive_i[positive_u == u].tolist())
        want = [i in positives for i in slow_pessimistic_order(scores[u].tolist(), positives)]
        got = [i in positives for i in torch.sort(ranked[u], descending=True, stable=True).indices.tolist()]
        assert got == want, f"row {u}: positives at other ranks than the reference"


@pytest.mark.parametrize("kind", ["distinct", "ties", "special"])
def test_top_k_path_gives_the_full_rankings_top_k(config, kind):
    """The fast path (`pessimistic_topk`, TieAwareCollector) against RecBole's collector fed the full
    keys of `pessimistic_ranking`: same hits at every rank, same positive counts."""
    gen = torch.Generator().manual_seed(1)
    if kind == "distinct":  # a trained model's scores: the fast path for every row
        scores = torch.randn(40, 30, generator=gen)
    elif kind == "ties":  # ties inside the top 4 (fast path at k = 4) and across the other cuts
        scores = torch.randint(0, 3, (40, 30), generator=gen).float()
        scores[:, :4], scores[:, 4] = 10.0, 9.0
    else:  # NaN and infinities among ties: the full keys' path
        values = torch.tensor([-2.5, -0.0, 0.0, 0.5, 3.0, float("inf"), -float("inf"), float("nan")])
        scores = values[torch.randint(0, len(values), (40, 30), generator=gen)]
    positive_u = torch.arange(40).repeat_interleave(3)
    positive_i = torch.randint(0, 30, (120,), generator=gen)  # duplicates count once
    reference = Collector(config)
    reference.eval_batch_collect(
        pessimistic_ranking(scores, positive_u, positive_i), None, positive_u, positive_i
    )
    fast = TieAwareCollector(config)
    fast.eval_batch_collect(scores, None, positive_u, positive_i)
    assert torch.equal(fast.get_data_struct()["rec.topk"], reference.get_data_struct()["rec.topk"])
    for k in (1, 4, 7, 30):
        index, hits = pessimistic_topk(scores, positive_u, positive_i, k)
        keys = pessimistic_ranking(scores, positive_u, positive_i)
        want = torch.sort(keys, dim=1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(keys.gather(1, index), keys.gather(1, want)), "same scores and labels in order"
        assert torch.equal(hits, keys.gather(1, want) % 2 == 0)


def test_perfect_scorer_gets_ndcg_one(config):
    scores = torch.zeros(4, 21)
    positives = [3, 7, 11, 20]
    scores[range(4), positives] = 1.0
    result = evaluate(config, scores, range(4), positives)
    for k in (1, 5, 10):
        assert result[f"ndcg@{k}"] == 1.0 and result[f"recall@{k}"] == 1.0 and result[f"mrr@{k}"] == 1.0


def test_constant_scorer_does_not_beat_random(config):
    n = 20
    scores = torch.zeros(3, n + 1)
    scores[:, 0] = -torch.inf  # padding
    positives = [1, 2, 20]  # slots where arbitrary tie order would favour the model
    result = evaluate(config, scores, range(3), positives)
    random_ndcg10 = sum(1 / math.log2(r + 1) for r in range(1, 11)) / n
    assert result["ndcg@10"] == 0.0 <= random_ndcg10
    assert result["recall@20"] == 1.0


def test_known_rank_gives_the_textbook_values(config):
    scores = torch.full((1, 21), 0.1)
    scores[0, [4, 9]] = 0.9  # two items above the positive
    scores[0, [5, 6]] = 0.5  # the positive (5) ties with item 6: it ranks 4th, not 3rd
    result = evaluate(config, scores, [0], [5])
    assert result["ndcg@5"] == pytest.approx(1 / math.log2(5), abs=1e-4)
    assert result["mrr@5"] == pytest.approx(0.25, abs=1e-4)
    assert result["recall@3"] == 0.0 and result["recall@5"] == 1.0


def test_several_positives_use_the_ideal_dcg(config):
    scores = torch.linspace(1, 0, 21).unsqueeze(0)  # item i ranks i+1
    result = evaluate(config, scores, [0, 0], [0, 2])
    ideal = 1 + 1 / math.log2(3)
    assert result["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / ideal, abs=1e-4)
