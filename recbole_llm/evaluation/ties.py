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
    bits = scores.contiguous().view(torch.int32)
    ordered = torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)  # -0.0 and 0.0 both map to 0
    keys = ordered.double().mul_(2).add_(1)  # |keys| < 2**33: exact in float64
    keys[positive_u, positive_i] -= 1
    return keys


class TieAwareCollector(Collector):
    """RecBole's collector fed with pessimistically tie-broken scores.

    It keeps the data of its last evaluation (`last_struct`), from which per-user metric values are
    derived on demand (evaluation.per_user) without slowing every validation epoch.
    """

    last_struct = None

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        ranked = pessimistic_ranking(scores_tensor, positive_u, positive_i)
        super().eval_batch_collect(ranked, interaction, positive_u, positive_i)

    def get_data_struct(self):
        self.last_struct = super().get_data_struct()
        return self.last_struct
