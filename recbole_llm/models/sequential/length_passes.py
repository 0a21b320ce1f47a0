"""A batch's rows grouped into passes of similar length, each pass cut to its longest sequence.

A right-padded batch costs its longest sequence at every row: on Beauty (at most 50 items, ~9 on
average) most of a batch's positions are padding. A causal model's states at the positions that hold
items never read a later position, so a pass may stop at its own longest sequence without changing
them; sorted by length, most passes are short.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# At most this many positions a pass of a batch on CPU (evaluation, and training through
# evaluation.passes): a layer's tensors stay near cache size. At ML-1M shapes (200 positions, one
# thread) SASRec's evaluation forward of 4096 users took 6.0 s in passes of 128 users, 6.2 s of 64,
# 7.4 s of 256, 10.4 s in one pass (16.4 s with the last layer at every position); a 512-user training
# step 0.85x (CE) and 0.87x (SCE) of one pass in passes of 128 (benchmarks/passes_ab.py).
PASS_TOKENS = 25_600

# A pass's fixed cost (Python, kernel launches, small matmuls) in positions of work: cutting a batch
# once more pays when it saves more padding than this.
PASS_OVERHEAD_TOKENS = 1024


def trimmed(item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`item_seq` [B, L] without the columns past its longest sequence (right padding only)."""
    return item_seq[:, : int(lengths.max())]


def length_passes(
    lengths: torch.Tensor, tokens: int, overhead: int = PASS_OVERHEAD_TOKENS
) -> list[torch.Tensor]:
    """Row indices of each pass, rows sorted by length: the passes whose padded positions (rows x the
    pass's longest length) plus `overhead` per pass are fewest, none over about `tokens` positions.

    Exact over the cuts between distinct lengths (dynamic programming, at most one group per length);
    a span of groups that exceeds `tokens` is split into near-equal passes of its rows.
    """
    order = torch.argsort(lengths.cpu(), stable=True)
    width, start = np.unique(lengths.cpu()[order].numpy(), return_index=True)
    ends = np.append(start[1:], len(order))  # group g: sorted rows start[g]:ends[g], length width[g]
    best, cut = np.zeros(len(width) + 1), np.zeros(len(width) + 1, dtype=np.int64)
    for g in range(len(width)):  # best[g + 1]: cheapest passes over groups 0..g; the last spans cut..g
        positions = (ends[g] - start[: g + 1]) * width[g]
        costs = best[: g + 1] + positions + np.ceil(positions / tokens) * overhead
        cut[g + 1] = int(np.argmin(costs))
        best[g + 1] = costs[cut[g + 1]]
    passes, g = [], len(width)
    while g > 0:
        first, rows = cut[g], order[start[cut[g]] : ends[g - 1]]
        passes[:0] = rows.tensor_split(min(len(rows), math.ceil(len(rows) * width[g - 1] / tokens)))
        g = first
    return [index.to(lengths.device) for index in passes]


class LengthPassesModel:
    """Mixin for a causal next-item model with `_last_states(item_seq, lengths) -> [B, H]`: its
    gradient-free CPU forward and its training batches (`loss_passes`, evaluation.passes) run in
    passes of similar lengths."""

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """The state at each sequence's last item (what scoring reads)."""
        if torch.is_grad_enabled() or item_seq.is_cuda:
            return self._last_states(item_seq, item_seq_len)
        states = self.item_embedding.weight.new_empty(len(item_seq), self.hidden_size)
        for index in length_passes(item_seq_len, PASS_TOKENS):
            states[index] = self._last_states(item_seq[index], item_seq_len[index])
        return states

    def loss_passes(self, interaction):
        """The batch in passes of similar lengths, each with its share of the batch's targets
        (all-position training: one per item of a sequence; otherwise one per sequence)."""
        lengths = interaction[self.ITEM_SEQ_LEN]
        targets = lengths if self.all_positions else torch.ones_like(lengths)
        total = targets.sum()
        for index in length_passes(lengths, PASS_TOKENS):
            yield interaction[index], float(targets[index].sum() / total)
