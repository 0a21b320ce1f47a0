"""NDCG with graded relevance (the graded protocol's ratings), ties broken pessimistically.

Among candidates of equal score the lower gains rank first, which by the rearrangement inequality
gives the smallest DCG any order of the tie could give: a tie never lifts a model. NaN ranks last.
"""

import torch


def graded_ndcg(scores: torch.Tensor, gains: torch.Tensor, cutoffs: tuple[int, ...]) -> torch.Tensor:
    """Per-user NDCG@k (users x len(cutoffs)) of `scores` against `gains` (both users x candidates).

    A user whose gains are all 0 scores 0.
    """
    scores = torch.nan_to_num(scores.double(), nan=-torch.inf)
    gains = gains.double()
    by_gain = torch.argsort(gains, dim=1, stable=True)  # ascending: a stable sort keeps it within ties
    by_score = torch.argsort(scores.gather(1, by_gain), dim=1, descending=True, stable=True)
    ranked = gains.gather(1, by_gain.gather(1, by_score))
    ideal = gains.sort(dim=1, descending=True).values
    discount = 1.0 / torch.log2(torch.arange(2, gains.shape[1] + 2, dtype=torch.float64, device=gains.device))
    at = torch.tensor([min(k, gains.shape[1]) - 1 for k in cutoffs], device=gains.device)
    dcg, idcg = (ranked * discount).cumsum(1)[:, at], (ideal * discount).cumsum(1)[:, at]
    return torch.where(idcg > 0, dcg / idcg.clamp_min(1e-300), torch.zeros_like(dcg))
