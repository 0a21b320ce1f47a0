"""List-wise ranking losses of ALRO (Chao et al. 2024, "Make Large Language Model a Better Ranker").

A list-wise SFT example shows N candidates with labels (A, B, C, ...) and its target text is the labels
in the desired order: target position t (0-based, t < T <= N) holds the label of the candidate ranked
t-th. Next-token CE on that text says nothing about *how wrong* a wrong order is; ALRO adds

- soft lambda loss: a LambdaLoss over each candidate's expected output position (a soft-argmax over
  the target positions), so swaps of high-gain candidates cost more than swaps in the tail;
- a permutation-sensitive loss: the divergence between the output distributions of the same example
  shown with its candidates in two orders, to remove position bias (free at inference).

Every function takes `label_logits` [B, T, N]: at target position t, the LLM's logits restricted to the
N candidates' label tokens. Batches of lists of different lengths are padded; the optional masks say
what is real: `mask` [B, N] (True = a real candidate; padded candidates get no probability and are in
no pair) and `position_mask` [B, T] (True = a real target position). Every example needs at least one
real candidate and one real target position.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

ALRO_ALPHA = 0.1  # weight of the soft lambda loss (paper default)
ALRO_BETA = 0.01  # weight of the permutation-sensitive loss (paper default)
ALRO_GAMMA = 2.0  # sharpness of the soft-argmax over target positions (paper default)

Weighting = Literal["delta_ndcg", "ndcg_loss2"]
Divergence = Literal["sym_kl", "kl", "js"]


def label_probs(label_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """p[b, t, i] = softmax_i(label_logits[b, t, :]): which candidate's label is emitted at position t.

    Padded candidates get probability exactly 0.
    """
    if mask is not None:
        label_logits = label_logits.masked_fill(~mask[:, None, :], float("-inf"))
    return label_logits.softmax(-1)


def expected_positions(
    label_logits: torch.Tensor,
    gamma: float = ALRO_GAMMA,
    mask: torch.Tensor | None = None,
    position_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each candidate's expected output position [B, N], a soft-argmax of its label's probability.

    ALRO's definition (s_i = sum_k k exp(gamma y_ki) / sum_l exp(gamma y_li)), with 0-based positions:

        p[b,t,i] = softmax_i(label_logits[b,t,:])          (over candidates)
        q[b,t,i] = softmax_t(gamma * p[b,t,i])              (over real target positions, per candidate)
        pos[b,i] = sum_t t * q[b,t,i]

    A candidate whose label is likely early gets a small position: the first should get the smallest.
    Since p is in [0, 1], gamma bounds how far pos can move from the mean position (T-1)/2.
    """
    scaled = gamma * label_probs(label_logits, mask)
    if position_mask is not None:
        scaled = scaled.masked_fill(~position_mask[:, :, None], float("-inf"))
    q = scaled.softmax(1)
    t = torch.arange(label_logits.shape[1], dtype=q.dtype, device=q.device)
    return (q * t[None, :, None]).sum(1)


def ideal_ranks(gains: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each candidate's rank [B, N] (0 = first) by decreasing gain; ties by index, padding last."""
    if mask is not None:
        gains = gains.masked_fill(~mask, float("-inf"))
    order = torch.argsort(gains, dim=-1, descending=True, stable=True)
    arange = torch.arange(gains.shape[-1], device=gains.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, arange)


def order_gains(ideal: torch.Tensor) -> torch.Tensor:
    """Relevance grades for a pure target order: candidate of ideal rank r gets N - r (first: N, last: 1)."""
    return (ideal.shape[-1] - ideal).to(torch.get_default_dtype())


def pair_weights(
    gains: torch.Tensor,
    mask: torch.Tensor | None = None,
    gain: Literal["exp", "linear"] = "exp",
    weighting: Weighting = "delta_ndcg",
) -> torch.Tensor:
    """LambdaLoss pair weights w[b, i, j] >= 0 (symmetric), from the ideal ranking r of `gains`.

    With G = 2^g - 1 ("exp") or g ("linear"), padding G = 0, d(r) = 1 / log2(2 + r) and
    IDCG = sum_i G_i d(r_i):

    - "delta_ndcg": |G_i - G_j| * |d(r_i) - d(r_j)| / IDCG, the |change of NDCG| when i and j swap
      places in the ideal ranking (LambdaRank's |delta NDCG|).
    - "ndcg_loss2": |G_i - G_j| * |1/log2(1 + k) - 1/log2(2 + k)| / IDCG with k = |r_i - r_j|, Wang et al.
      2018's NDCG-Loss2 weight, which ALRO's soft lambda loss writes with the target ranks.

    All-zero gains (IDCG = 0) give zero weights.
    """
    g = torch.pow(2.0, gains) - 1.0 if gain == "exp" else gains
    if mask is not None:
        g = g.masked_fill(~mask, 0.0)
    ranks = ideal_ranks(gains, mask).to(g.dtype)
    discount = 1.0 / torch.log2(2.0 + ranks)
    idcg = (g * discount).sum(-1)
    idcg = torch.where(idcg > 0, idcg, torch.ones_like(idcg))
    gain_diff = (g[:, :, None] - g[:, None, :]).abs()
    if weighting == "delta_ndcg":
        delta = (discount[:, :, None] - discount[:, None, :]).abs()
    elif weighting == "ndcg_loss2":
        k = (ranks[:, :, None] - ranks[:, None, :]).abs().clamp_min(1.0)  # the diagonal has gain_diff 0
        delta = 1.0 / torch.log2(1.0 + k) - 1.0 / torch.log2(2.0 + k)
    else:
        raise ValueError(f"unknown weighting {weighting!r}")
    return gain_diff * delta / idcg[:, None, None]


def soft_lambda_loss(
    label_logits: torch.Tensor,
    gains: torch.Tensor,
    gamma: float = ALRO_GAMMA,
    sigma: float = 1.0,
    mask: torch.Tensor | None = None,
    position_mask: torch.Tensor | None = None,
    gain: Literal["exp", "linear"] = "exp",
    weighting: Weighting = "delta_ndcg",
) -> torch.Tensor:
    """ALRO's soft lambda loss, batch mean: a LambdaLoss on expected output positions.

    With pos = `expected_positions(label_logits, gamma)` and w = `pair_weights(gains)`:

        loss_b = sum_{i, j real, gains[i] > gains[j]} w_ij * log(1 + exp(-sigma * (pos_j - pos_i)))

    i should come first, i.e. have the smaller position; the position differences play the role of
    the score differences s_i - s_j of LambdaLoss. Natural log (log2 only rescales by 1/ln 2).
    """
    pos = expected_positions(label_logits, gamma, mask, position_mask)
    weights = pair_weights(gains, mask, gain, weighting)
    pairs = gains[:, :, None] > gains[:, None, :]
    if mask is not None:
        pairs = pairs & mask[:, :, None] & mask[:, None, :]
    gap = pos[:, None, :] - pos[:, :, None]  # gap[b, i, j] = pos_j - pos_i
    per_pair = weights * F.softplus(-sigma * gap)
    return torch.where(pairs, per_pair, torch.zeros_like(per_pair)).sum((1, 2)).mean()


def permutation_sensitive_loss(
    label_logits_a: torch.Tensor,
    label_logits_b: torch.Tensor,
    perm: torch.Tensor,
    mask: torch.Tensor | None = None,
    position_mask: torch.Tensor | None = None,
    divergence: Divergence = "sym_kl",
) -> torch.Tensor:
    """Divergence between the output distributions of two orders of one example, batch mean.

    View b shows in slot k the candidate perm[b, k] of view a (`perm` [B, N]; padded slots map to
    themselves); `mask` is over view a's candidates. View b's logits are mapped back to items first,
    l_b[t, perm[k]] = label_logits_b[t, k], so a permutation-invariant scorer gives exactly 0. With
    p_a, p_b the per-position distributions over items:

    - "sym_kl": (KL(p_a || p_b) + KL(p_b || p_a)) / 2
    - "kl":     KL(p_a || p_b) (ALRO's direction: the original order's output as reference)
    - "js":     (KL(p_a || m) + KL(p_b || m)) / 2, m = (p_a + p_b) / 2

    averaged over the real target positions. Both views get gradients (detach one to make it a target).
    """
    index = perm[:, None, :].expand_as(label_logits_b)
    logits_b = torch.empty_like(label_logits_b).scatter(-1, index, label_logits_b)
    if mask is not None:
        logits_a = label_logits_a.masked_fill(~mask[:, None, :], float("-inf"))
        logits_b = logits_b.masked_fill(~mask[:, None, :], float("-inf"))
    else:
        logits_a = label_logits_a
    log_a, log_b = logits_a.log_softmax(-1), logits_b.log_softmax(-1)
    if mask is not None:  # padded items have p = 0: log p = -inf would give 0 * nan
        zero = torch.zeros_like(log_a)
        log_a = torch.where(mask[:, None, :], log_a, zero)
        log_b = torch.where(mask[:, None, :], log_b, zero)
    p_a, p_b = log_a.exp(), log_b.exp()
    if mask is not None:
        p_a, p_b = p_a * mask[:, None, :], p_b * mask[:, None, :]
    if divergence == "kl":
        per_position = (p_a * (log_a - log_b)).sum(-1)
    elif divergence == "sym_kl":
        per_position = 0.5 * ((p_a - p_b) * (log_a - log_b)).sum(-1)
    elif divergence == "js":
        log_m = torch.logaddexp(log_a, log_b) - math.log(2.0)  # log 0.5 (p_a + p_b), stable
        per_position = 0.5 * (p_a * (log_a - log_m) + p_b * (log_b - log_m)).sum(-1)
    else:
        raise ValueError(f"unknown divergence {divergence!r}")
    if position_mask is None:
        return per_position.mean(-1).mean()
    weights = position_mask.to(per_position.dtype)
    return ((per_position * weights).sum(-1) / weights.sum(-1)).mean()


def alro_loss(
    sft_loss: torch.Tensor,
    lambda_loss: torch.Tensor,
    perm_loss: torch.Tensor,
    alpha: float = ALRO_ALPHA,
    beta: float = ALRO_BETA,
) -> torch.Tensor:
    """ALRO's objective: sft + alpha * soft lambda + beta * permutation-sensitive."""
    return sft_loss + alpha * lambda_loss + beta * perm_loss
