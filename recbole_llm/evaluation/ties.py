"""Pessimistic tie-breaking: a model never gains from giving the ground truth a tied score.

RecBole ranks with `torch.topk`, whose order among equal scores is arbitrary, so a constant scorer
can look better than random. Here every positive ranks below every other item with the same score.
"""

import torch
from recbole.evaluator import Collector


def pessimistic_ranking(
    scores: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor
) -> torch.Tensor:
    """Tie-free scores (minus the rank) that order equal scores with positives last. NaN ranks last."""
    scores = torch.nan_to_num(scores.float(), nan=-torch.inf, posinf=torch.finfo(torch.float32).max)
    is_positive = torch.zeros_like(scores, dtype=torch.uint8)
    is_positive[positive_u, positive_i] = 1
    # Two stable sorts give a lexicographic order: score descending, then negatives before positives.
    by_label = torch.argsort(is_positive, dim=1, stable=True)
    by_score = torch.sort(scores.gather(1, by_label), dim=1, descending=True, stable=True).indices
    order = by_label.gather(1, by_score)
    ranks = torch.arange(scores.shape[1], dtype=torch.float32, device=scores.device)
    return torch.empty_like(scores).scatter_(1, order, -ranks.expand_as(scores))


class TieAwareCollector(Collector):
    """RecBole's collector fed with pessimistically tie-broken scores."""

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        ranked = pessimistic_ranking(scores_tensor, positive_u, positive_i)
        super().eval_batch_collect(ranked, interaction, positive_u, positive_i)
