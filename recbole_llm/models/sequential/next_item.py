"""Next-item training shared by the plugin's sequential models: a loss family and all-position
training.

All-position training runs one forward pass per window of a user's sequence and predicts the next
item at every position of a causal model, instead of RecBole's one training row per prefix: the same
targets, ~sequence-length times fewer tokens through the network.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.utils import InputType

from recbole_llm import losses
from recbole_llm.data.split import subset_loader
from recbole_llm.errors import RecBoleLLMError, did_you_mean

NEGATIVE_EXCLUDE = ("none", "positive", "history")
TRAIN_WINDOWS = ("all", "last")


def window_rows(uids: np.ndarray, max_len: int, last_only: bool = False) -> np.ndarray:
    """Rows of a user-sorted, time-ordered augmented dataset that all-position training reads.

    A user's row j holds the (at most `max_len`) items before target j+1, so all-position training on
    it predicts targets j+2-max_len .. j+1. The user's last row and every `max_len`-th row before it
    therefore cover each training target exactly once; `last_only` keeps just the last row (the
    user's most recent `max_len` items, as the original SASRec trains).
    """
    last = np.append(uids[1:] != uids[:-1], True)
    if last_only:
        return last
    ends = np.flatnonzero(last)
    counts = np.diff(np.concatenate([[-1], ends]))
    steps_from_end = np.repeat(ends, counts) - np.arange(len(uids))
    return steps_from_end % max_len == 0


class NextItemModel:
    """Mixin for a RecBole sequential model that provides `sequence_states(item_seq) -> [B, L, H]`.

    Uses the model's `item_embedding` as output layer (as SASRec and GRU4Rec do).
    """

    input_type = InputType.POINTWISE  # negatives are sampled here, not by RecBole's loader

    def __init__(self, config, dataset):
        loss_type = config["loss_type"]
        # RecBole's constructors accept only BPR/CE; the loss is computed here, not by them.
        config["loss_type"] = "CE"
        try:
            super().__init__(config, dataset)
        finally:
            config["loss_type"] = loss_type
        self.loss_type = _check_loss(loss_type)
        self.all_positions = bool(config["all_positions"])
        _check_choice("train_window", config["train_window"], TRAIN_WINDOWS)
        self.sce_alpha, self.nce_c = float(config["sce_alpha"]), float(config["nce_c"])
        self.negative_exclude = _check_choice(
            "negative_exclude", config["negative_exclude"], NEGATIVE_EXCLUDE
        )
        k = config["num_negatives"]
        self.num_negatives = config["loss_num_negatives"][loss_type] if k is None else k
        if loss_type != "CE" and (not isinstance(self.num_negatives, int) or self.num_negatives < 1):
            raise RecBoleLLMError(
                f"loss_type={loss_type} needs num_negatives >= 1, not {self.num_negatives}."
            )
        self.generator = torch.Generator().manual_seed(config["seed"])

    @classmethod
    def adapt_train_loader(cls, config, loader):
        """All-position training reads one row per `MAX_ITEM_LIST_LENGTH` window of each user."""
        if not config["all_positions"]:
            return loader
        ds = loader._dataset
        keep = window_rows(
            ds.inter_feat[ds.uid_field].numpy(),
            config["MAX_ITEM_LIST_LENGTH"],
            last_only=config["train_window"] == "last",
        )
        return subset_loader(config, loader, keep, shuffle=True)

    def forward(self, item_seq, item_seq_len):
        return self.gather_indexes(self.sequence_states(item_seq), item_seq_len - 1)

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        seq_len = interaction[self.ITEM_SEQ_LEN]
        rows = torch.arange(len(item_seq), device=item_seq.device)
        states = self.sequence_states(item_seq)
        if self.all_positions:
            targets = torch.cat([item_seq[:, 1:], torch.zeros_like(item_seq[:, :1])], dim=1)
            targets[rows, seq_len - 1] = interaction[self.POS_ITEM_ID]
            valid = targets > 0
            states, targets, rows = states[valid], targets[valid], rows.unsqueeze(1).expand_as(valid)[valid]
        else:
            states, targets = self.gather_indexes(states, seq_len - 1), interaction[self.POS_ITEM_ID]
        return self.next_item_loss(states, targets, item_seq, rows).mean()

    def next_item_loss(
        self, states: torch.Tensor, targets: torch.Tensor, item_seq: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """Per-position loss of predicting `targets` [P] from `states` [P, H]; position p belongs to
        the input sequence `item_seq[rows[p]]`."""
        if self.loss_type == "CE":
            return losses.ce_from_states(states, self.item_embedding.weight, targets)
        history = item_seq[rows] if self.negative_exclude == "history" else None
        negatives = self._sample(targets, history)
        pos = (states * self.item_embedding(targets)).sum(-1)
        neg = torch.einsum("ph,pkh->pk", states, self.item_embedding(negatives))
        return losses.sampled_loss(self.loss_type, pos, neg, self.n_items, self.sce_alpha, self.nce_c)

    def _sample(self, targets: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        shape = (len(targets), self.num_negatives)
        negatives = losses.sample_negatives(shape, self.n_items, self.generator).to(targets.device)
        if self.negative_exclude == "none":
            return negatives
        for _ in range(100):  # resample collisions; a handful of rounds suffices in practice
            bad = negatives == targets.unsqueeze(1)
            if self.negative_exclude == "history":
                bad |= (negatives.unsqueeze(-1) == history.unsqueeze(1)).any(-1)
            if not bad.any():
                break
            fresh = losses.sample_negatives(shape, self.n_items, self.generator).to(targets.device)
            negatives = torch.where(bad, fresh, negatives)
        return negatives


def _check_choice(key: str, value, choices: tuple[str, ...]):
    if value not in choices:
        raise RecBoleLLMError(f"{key} must be one of {', '.join(choices)}, not {value!r}.")
    return value


def _check_loss(loss_type: str) -> str:
    if loss_type not in losses.LOSSES:
        raise RecBoleLLMError(
            f"Unknown loss_type {loss_type!r}; choose from {', '.join(losses.LOSSES)}."
            + did_you_mean(str(loss_type), losses.LOSSES)
        )
    return loss_type
