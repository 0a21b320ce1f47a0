"""Pessimistic tie-breaking: a model never gains from giving the ground truth a tied score.

RecBole ranks with `torch.topk`, whose order among equal scores is arbitrary, so a constant scorer
can look better than random. Here every positive ranks below every other item with the same score.
"""

import torch
from recbole.evaluator import Collector


def pessimistic_ranking(
    scores: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor
) -> torch.Tensor:
    """Scores (float64) that order as `scores` do, with each positive after the non-positives it ties
    with. NaN ranks last.

    Each float32 score becomes its order-preserving integer, doubled, plus 1 for a non-positive: one
    exact float64 key per item, so a single `topk` gives the lexicographic order (score descending,
    then non-positives first) without sorting whole rows. Items of the same score and the same label
    still tie, which no rank-based metric can tell apart.
    """
    scores = torch.nan_to_num(scores.float(), nan=-torch.inf, posinf=torch.finfo(torch.float32).max)
    keys = _keys(scores)
    keys[positive_u, positive_i] -= 1
    return keys


def pessimistic_topk(
    scores: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `k` items of `pessimistic_ranking`'s order [B, k] and whether each is a positive.

    A row whose k-th and (k+1)-th scores differ (and that holds no NaN or +inf there) has its top k in
    one float32 `topk`; only the k scores are then ordered with ties broken, and the positives are
    looked up among them instead of filling a [B, items] matrix. Other rows (ties across the cut, as
    a constant scorer's) take `pessimistic_ranking`'s keys. Same result, a fraction of the passes
    over the score matrix.
    """
    rows, items = scores.shape
    k = min(k, items)
    positives = _positive_keys(positive_u, positive_i, items)
    values, index = torch.topk(scores.float(), min(k + 1, items), dim=1)
    special = (torch.isnan(values) | (values == torch.inf)).any(1)
    split = values[:, k - 1] > values[:, k] if k < items else torch.ones_like(special)
    fast = split & ~special
    values, index = values[:, :k], index[:, :k]
    hits = torch.isin(torch.arange(rows, device=scores.device).unsqueeze(1) * items + index, positives)
    order = torch.sort(_keys(values) - hits.double(), dim=1, descending=True, stable=True).indices
    index, hits = index.gather(1, order), hits.gather(1, order)
    slow = torch.nonzero(~fast).flatten()
    if len(slow):
        where = torch.full((rows,), -1, dtype=torch.long, device=scores.device)
        where[slow] = torch.arange(len(slow), device=scores.device)
        kept = where[positive_u] >= 0
        keys = pessimistic_ranking(scores[slow], where[positive_u[kept]], positive_i[kept])
        index[slow] = torch.topk(keys, k, dim=1).indices
        hits[slow] = torch.isin(slow.unsqueeze(1) * items + index[slow], positives)
    return index, hits


def _keys(scores: torch.Tensor) -> torch.Tensor:
    """Each float32 score's order-preserving integer, doubled, plus 1, as float64 (|key| < 2**33)."""
    bits = scores.contiguous().view(torch.int32)
    ordered = torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)  # -0.0 and 0.0 both map to 0
    return ordered.double().mul_(2).add_(1)


def _positive_keys(positive_u: torch.Tensor, positive_i: torch.Tensor, items: int) -> torch.Tensor:
    """The distinct positives as row * items + item, as RecBole's 0/1 positive matrix counts them."""
    return torch.unique(positive_u.long() * items + positive_i.long())


class TieAwareCollector(Collector):
    """RecBole's collector fed with pessimistically tie-broken scores.

    It keeps the data of its last evaluation (`last_struct`), from which per-user metric values are
    derived on demand (evaluation.per_user) without slowing every validation epoch.
    """

    last_struct = None

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        if any(self.register.need(key) for key in ("rec.meanrank", "rec.score", "data.label")):
            ranked = pessimistic_ranking(scores_tensor, positive_u, positive_i)
            super().eval_batch_collect(ranked, interaction, positive_u, positive_i)
            return
        # Top-k metrics only: the collector's topk, 0/1 matrix and row sums, without the full keys.
        index, hits = pessimistic_topk(scores_tensor, positive_u, positive_i, max(self.topk))
        if self.register.need("rec.items"):
            self.data_struct.update_tensor("rec.items", index)
        if self.register.need("rec.topk"):
            rows, items = scores_tensor.shape
            counts = torch.bincount(_positive_keys(positive_u, positive_i, items) // items, minlength=rows)
            result = torch.cat((hits.int(), counts.int().unsqueeze(1)), dim=1)
            self.data_struct.update_tensor("rec.topk", result)

    def get_data_struct(self):
        self.last_struct = super().get_data_struct()
        return self.last_struct
