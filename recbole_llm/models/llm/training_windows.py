"""ALRO's graded training lists: the items a training row's user rated next, with their ratings.

Under `train_target: graded`, a training row (a user's items before position p, the item at p its
target) is shown the user's next `size` items of the training split from p on, and its answer ranks
them by rating, as ALRO trains (its 25 rated items after 20 history items). Only the training split is
read: the model gets RecBole's training dataset, so no validation or test item (and, under the graded
protocol, no window item) can enter a training list.
"""

from __future__ import annotations

import numpy as np


class TrainingWindows:
    """Each user's training items in time order and their ratings (internal ids)."""

    def __init__(self, dataset, rating_field: str):
        inter = dataset.inter_feat
        users = inter[dataset.uid_field].numpy()
        order = np.lexsort((inter[dataset.time_field].numpy(), users))  # by user, then time (stable)
        users, items = users[order], inter[dataset.iid_field].numpy()[order]
        ratings = inter[rating_field].numpy().astype(np.float32)[order]
        bounds = np.flatnonzero(np.diff(users)) + 1
        self.items = dict(zip(users[np.r_[0, bounds]].tolist(), np.split(items, bounds)))
        self.ratings = dict(zip(users[np.r_[0, bounds]].tolist(), np.split(ratings, bounds)))

    def user_items(self, user: int) -> np.ndarray:
        return self.items[user]

    def window(self, user: int, history: np.ndarray, target: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The row's target and the user's items after it, at most `size` distinct ones (first
        occurrences), and their ratings. The row is found as the target's first occurrence after
        `history` (the row's item sequence, possibly cut to its last items) whose prefix ends so."""
        items, ratings = self.items[user], self.ratings[user]
        starts = np.flatnonzero(items == target)
        n = len(history)
        fits = [p for p in starts if p >= n and np.array_equal(items[p - n : p], history)]
        start = fits[0] if fits else starts[0]
        _, first = np.unique(items[start:], return_index=True)
        keep = np.sort(first)[:size] + start
        return items[keep], ratings[keep]
