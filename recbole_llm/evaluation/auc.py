"""AUC of candidate lists: how often a user's ground truth outscores the list's other items.

Beside the ranking metrics, it reads a point-wise ranker's scores as a classifier's (TALLRec reports
AUC): per user, the share of (ground truth, negative) pairs the ground truth wins, a tie counting 1/2.
"""

from __future__ import annotations

import numpy as np


def candidate_auc(scores: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per row of `scores` [users, N] (aligned with `candidates`), the AUC of the row's `targets` item
    against the list's other items; NaN where the list lacks the target or has nothing else."""
    positive = candidates == targets[:, None]
    found = positive.any(1)
    truth = np.where(found, scores[np.arange(len(scores)), positive.argmax(1)], np.nan)[:, None]
    negative = ~positive
    wins = ((scores < truth) + 0.5 * (scores == truth)) * negative
    count = negative.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(found & (count > 0), wins.sum(1) / count, np.nan)
