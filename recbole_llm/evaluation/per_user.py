"""Each evaluated user's value of every top-k metric, from the data RecBole's evaluator averages.

Two runs on the same lists can then be compared user by user (a paired test), and one run's mean gets
an interval over its users. The mean of each column is the reported metric.
"""

from __future__ import annotations

import numpy as np
from recbole.evaluator import DataStruct
from recbole.evaluator.base_metric import TopkMetric
from recbole.evaluator.register import metrics_dict


def _unaveraged(metric: TopkMetric, key: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """`TopkMetric.topk_result` without its mean over users: each user's value at every k."""
    return {f"{key}@{k}": rows[:, k - 1].astype(np.float64) for k in metric.topk}


def topk_per_user(config, struct: DataStruct) -> dict[str, np.ndarray]:
    """Per-user values (rows of `struct`) of the config's top-k metrics, keyed like RecBole's result.

    Each metric computes its per-user matrix itself (`calculate_metric`), so these are exactly the rows
    whose mean RecBole reports. Metrics that are not a mean over users (AUC, coverage) are left out.
    """
    values = {}
    for name in config["metrics"]:
        metric = metrics_dict[name.lower()](config)
        if not isinstance(metric, TopkMetric):
            continue
        metric.topk_result = lambda key, rows, metric=metric: _unaveraged(metric, key, rows)
        values.update(metric.calculate_metric(struct))
    return values
