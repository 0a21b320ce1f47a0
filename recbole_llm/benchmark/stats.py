"""How sure a leaderboard cell is: 95% intervals of a mean, and a paired test against a baseline.

Intervals are Student-t intervals of a mean: over a model's seed means when it ran several seeds,
over its users' per-user values when it ran one. The paired test is the two-sided Wilcoxon signed-rank
test of per-user values (scipy.stats.wilcoxon): rank-based, so the few discrete values a per-user NDCG
takes need no distributional assumption; users whose two values are equal are dropped (Wilcoxon's own
rule). With several seeds each user's value is its mean over them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
TEST_NAME = "two-sided Wilcoxon signed-rank test"


def half_width(values: Sequence[float]) -> float:
    """Half-width of the 95% Student-t confidence interval of the mean of `values` (n >= 2)."""
    n = len(values)
    critical = stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)
    return float(critical * np.std(values, ddof=1) / math.sqrt(n))


def paired_p_value(values: np.ndarray, baseline: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of `values` vs `baseline`, paired by position.

    Users with equal values are dropped first (zero_method "wilcox"), so that scipy picks its method by
    the users that differ: the exact distribution (every sign flip) for few of them, the tie-corrected
    normal approximation for many; 4 users better by the same amount among 943 get p = 2/2^4, not ~0.05.
    1.0 when no user differs: identical runs are never significant.
    """
    differences = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    differences = differences[differences != 0]
    if not len(differences):
        return 1.0
    return float(stats.wilcoxon(differences, alternative="two-sided").pvalue)


def user_means(per_users: list[dict], metric: str) -> dict[str, float] | None:
    """Each user's value of `metric` averaged over runs (seeds), by user token; None when any run lacks
    per-user values of `metric` or the runs evaluated different users."""
    if not per_users or any(p is None or metric not in p["values"] for p in per_users):
        return None
    columns = [dict(zip(p["users"], p["values"][metric])) for p in per_users]
    if any(c.keys() != columns[0].keys() for c in columns):
        return None
    return {u: statistics.fmean(c[u] for c in columns) for u in columns[0]}


def paired(values: dict[str, float], baseline: dict[str, float]) -> tuple[np.ndarray, np.ndarray] | None:
    """The two runs' values in one user order, or None unless they evaluated the same users."""
    if values.keys() != baseline.keys():
        return None
    users = list(baseline)
    return np.array([values[u] for u in users]), np.array([baseline[u] for u in users])
