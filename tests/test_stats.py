"""Intervals and the paired test, against references computed another way: a t table, a brute-force
enumeration of every sign flip, and the normal approximation written out by hand."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from recbole_llm.benchmark.stats import half_width, paired, paired_p_value, user_means

# NDCG@10 of a single relevant item at ranks 1..10, and 0 beyond: the values a per-user column takes.
NDCG_VALUES = [0.0] + [1 / math.log2(r + 1) for r in range(1, 11)]


def test_interval_is_the_student_t_half_width():
    values = [0.71, 0.74, 0.69]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert half_width(values) == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-6)  # t(0.975, 2)
    low, high = stats.t.interval(0.95, 2, loc=mean, scale=sd / math.sqrt(3))
    assert half_width(values) == pytest.approx((high - low) / 2, rel=1e-12)
    assert half_width([0.2, 0.4]) == pytest.approx(12.7062 * math.sqrt(0.02) / math.sqrt(2), rel=1e-5)


def brute_force_p(d: np.ndarray) -> float:
    """Two-sided exact p of the signed-rank sum W+ (no ties, no zeros): every one of the 2^n sign
    assignments is equally likely under the null."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    observed = ranks[d > 0].sum()
    null = np.array([ranks[list(s)].sum() for s in itertools.product([False, True], repeat=len(d))])
    return min(1.0, 2 * min((null <= observed).mean(), (null >= observed).mean()))


def test_small_samples_get_the_exact_p_of_every_sign_flip():
    rng = np.random.default_rng(0)
    baseline = rng.random(11)
    for shift in (0.0, 0.2, 0.33):
        d = np.array([0.9, 0.7, -0.2, 0.5, 0.45, 0.3, -0.35, 0.8, 0.15, -0.6, 0.55]) - shift
        assert len(np.unique(np.round(np.abs(d), 9))) == 11 and np.all(d != 0), "no ties, no zeros"
        values = baseline + d
        assert paired_p_value(values, baseline) == pytest.approx(brute_force_p(values - baseline), rel=1e-12)


def normal_approximation_p(d: np.ndarray) -> float:
    """Two-sided p of W+ by its normal approximation: zeros dropped, tied |d| given their average rank,
    the variance reduced by sum(t^3 - t)/48 over tie groups of size t; no continuity correction."""
    d = d[d != 0]
    n = len(d)
    magnitudes = np.abs(d)
    order = np.sort(magnitudes)
    ranks = np.empty(n)
    ties = 0.0
    for value in np.unique(magnitudes):
        first, last = np.searchsorted(order, value, "left"), np.searchsorted(order, value, "right")
        ranks[magnitudes == value] = (first + 1 + last) / 2  # the mean of ranks first+1 .. last
        ties += (last - first) ** 3 - (last - first)
    w = ranks[d > 0].sum()
    z = (w - n * (n + 1) / 4) / math.sqrt(n * (n + 1) * (2 * n + 1) / 24 - ties / 48)
    return math.erfc(abs(z) / math.sqrt(2))


def test_large_samples_with_ties_and_zeros_get_the_tie_corrected_normal_approximation():
    rng = np.random.default_rng(1)
    baseline = rng.choice(NDCG_VALUES, size=300)
    values = np.where(rng.random(300) < 0.15, rng.choice(NDCG_VALUES, size=300), baseline)
    d = values - baseline
    assert (d == 0).sum() > 200 and len(np.unique(np.abs(d))) < (d != 0).sum(), "zeros and ties"
    p = paired_p_value(values, baseline)
    assert p == pytest.approx(normal_approximation_p(d), rel=1e-9)
    assert 1e-6 < p < 1, "a case the approximation does not round to 0 or 1"


def test_few_differing_users_get_the_exact_p_not_the_normal_approximation():
    baseline = np.array(NDCG_VALUES * 20)
    values = baseline.copy()
    values[[3, 50, 100, 150]] += 0.5  # 4 of 220 users better by the same amount, the others equal
    assert paired_p_value(values, baseline) == pytest.approx(2 / 2**4), "P(all 4 signs +) twice"


def test_identical_values_are_never_significant():
    values = np.array(NDCG_VALUES * 20)
    assert paired_p_value(values, values.copy()) == 1.0


def test_seeds_are_averaged_per_user_and_only_the_same_users_pair():
    run1 = {"users": ["a", "b"], "values": {"ndcg@10": [0.5, 1.0]}}
    run2 = {"users": ["b", "a"], "values": {"ndcg@10": [0.0, 0.25]}}
    assert user_means([run1, run2], "ndcg@10") == {"a": 0.375, "b": 0.5}
    assert user_means([run1, None], "ndcg@10") is None, "a run without per-user values"
    assert user_means([run1], "recall@10") is None
    assert user_means([run1, {"users": ["a"], "values": {"ndcg@10": [1.0]}}], "ndcg@10") is None
    ours, base = paired({"b": 2.0, "a": 1.0}, {"a": 3.0, "b": 4.0})
    assert ours.tolist() == [1.0, 2.0] and base.tolist() == [3.0, 4.0], "paired by user, not position"
    assert paired({"a": 1.0}, {"b": 1.0}) is None
