"""The graded protocol's split: each eligible user's last `size` interactions become its graded list.

Leave-one-out stays the split of every model; under `graded` the last `size - 1` interactions of each
user with at least `history + size` of them are removed from the data before RecBole splits it. The
first item of the window is then RecBole's test item, so every model's test input is exactly the
history before the window, and no window item is trained on, validated on, or masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recbole_llm.data.protocols import Graded
from recbole_llm.errors import RecBoleLLMError


@dataclass
class Windows:
    """Each graded user's window in time order (internal item ids) and the ratings of its items."""

    items: dict[int, np.ndarray]
    ratings: dict[int, np.ndarray]


def hold_out_windows(config, dataset, protocol: Graded) -> Windows:
    """Remove each eligible user's window but its first item from `dataset` (its DataFrame, before
    RecBole splits it) and return the windows.

    Eligible: at least `history + size` interactions and `size` distinct items in the window; other
    users keep all their data and are not evaluated under `graded`. Rows are ordered as RecBole
    orders them (a stable sort by time), so the kept first item is RecBole's test item.
    """
    inter = dataset.inter_feat
    uid, iid, rating = dataset.uid_field, dataset.iid_field, config["RATING_FIELD"]
    order = np.argsort(inter[dataset.time_field].to_numpy(), kind="stable")
    order = order[np.argsort(inter[uid].to_numpy()[order], kind="stable")]  # by user, then time
    users, items = inter[uid].to_numpy()[order], inter[iid].to_numpy()[order]
    ratings = inter[rating].to_numpy(dtype=np.float64)[order]
    starts = np.flatnonzero(np.r_[True, np.diff(users) != 0])
    ends = np.r_[starts[1:], len(users)]
    windows, held = Windows({}, {}), []
    for start, end in zip(starts, ends):
        first = end - protocol.size
        if first - start < protocol.history or len(np.unique(items[first:end])) < protocol.size:
            continue
        windows.items[int(users[start])] = items[first:end]
        windows.ratings[int(users[start])] = ratings[first:end]
        held.append(order[first + 1 : end])
    if not windows.items:
        raise RecBoleLLMError(
            f"No user of {config['dataset']} has history + size = {protocol.history + protocol.size} "
            "interactions with distinct window items; lower candidates.history or candidates.size."
        )
    keep = np.ones(len(inter), dtype=bool)
    keep[np.concatenate(held)] = False
    dataset.inter_feat = inter[keep].reset_index(drop=True)
    return windows
