"""Next-item losses of Xu et al. 2024 ("Understanding the Role of Cross-Entropy Loss in Fairly
Evaluating LLM-based Recommendation"), over scores of positives and sampled negatives.

With s+ the positive's score and s_1..s_K the sampled negatives' scores:

- CE:  -log softmax over all items (needs the full score row).
- SCE: -log( exp(s+) / (exp(s+) + alpha * sum_k exp(s_k)) ); SSM is alpha = 1.
- NCE: s' = s + log(|I| / K) - c;  -log sigmoid(s'+) - sum_k log(1 - sigmoid(s'_k)).
- BCE: -log sigmoid(s+) - sum_k log(1 - sigmoid(s_k)).
- BPR: mean_k -log sigmoid(s+ - s_k).

Every function returns one loss per row (the caller masks padding and averages).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SAMPLED_LOSSES = ("SCE", "SSM", "NCE", "BCE", "BPR")
LOSSES = ("CE", *SAMPLED_LOSSES)


def ce(all_scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(all_scores, target, reduction="none")


def sce(pos: torch.Tensor, neg: torch.Tensor, alpha: float = 100.0) -> torch.Tensor:
    logits = torch.cat([pos.unsqueeze(-1), neg + math.log(alpha)], dim=-1)
    return torch.logsumexp(logits, dim=-1) - pos


def nce(pos: torch.Tensor, neg: torch.Tensor, n_items: int, c: float = 10.0) -> torch.Tensor:
    shift = math.log(n_items / neg.shape[-1]) - c
    return -F.logsigmoid(pos + shift) - F.logsigmoid(-(neg + shift)).sum(-1)


def bce(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(pos) - F.logsigmoid(-neg).sum(-1)


def bpr(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(pos.unsqueeze(-1) - neg).mean(-1)


def sampled_loss(name: str, pos: torch.Tensor, neg: torch.Tensor, n_items: int, alpha: float, c: float):
    """Dispatch on a `loss_type` name for the sampled losses."""
    if name == "SCE":
        return sce(pos, neg, alpha)
    if name == "SSM":
        return sce(pos, neg, 1.0)
    if name == "NCE":
        return nce(pos, neg, n_items, c)
    if name == "BCE":
        return bce(pos, neg)
    if name == "BPR":
        return bpr(pos, neg)
    raise ValueError(f"unknown sampled loss {name!r}; expected one of {SAMPLED_LOSSES}")


def sample_negatives(
    shape: tuple[int, ...], n_items: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Item ids drawn uniformly from 1..n_items-1 (0 is padding); the positive is not excluded,
    as in the paper."""
    return torch.randint(1, n_items, shape, generator=generator)
