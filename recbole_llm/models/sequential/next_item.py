"""Next-item training shared by the plugin's sequential models: a loss family and all-position
training.

All-position training runs one forward pass per window of a user's sequence and predicts the next
item at every position of a causal model, instead of RecBole's one training row per prefix: the same
targets, ~sequence-length times fewer tokens through the network. Batches run only up to their
longest sequence: a causal model never reads the right padding past it.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.utils import InputType

from recbole_llm import losses
from recbole_llm.data.split import subset_loader
from recbole_llm.errors import RecBoleLLMError, did_you_mean
from recbole_llm.models.sequential.length_passes import trimmed

NEGATIVE_EXCLUDE = ("none", "positive", "history")
NEGATIVE_SHARING = ("position", "sequence", "batch")
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
        self.negative_sharing = _check_choice(
            "negative_sharing", config["negative_sharing"], NEGATIVE_SHARING
        )
        if self.negative_exclude == "history" and self.negative_sharing != "position":
            raise RecBoleLLMError(
                f"negative_exclude=history draws negatives per position; with negative_sharing="
                f"{self.negative_sharing} use negative_exclude=positive or none."
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
        return self.gather_indexes(self.sequence_states(trimmed(item_seq, item_seq_len)), item_seq_len - 1)

    def predict(self, interaction) -> torch.Tensor:
        states = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (states * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return (
            self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
            @ self.item_embedding.weight.T
        )

    def calculate_loss(self, interaction):
        seq_len = interaction[self.ITEM_SEQ_LEN]
        item_seq = trimmed(interaction[self.ITEM_SEQ], seq_len)
        rows = torch.arange(len(item_seq), device=item_seq.device)
        if self.all_positions:  # position j predicts item j + 1; the last item predicts the row's target
            targets = torch.cat([item_seq[:, 1:], torch.zeros_like(item_seq[:, :1])], dim=1)
        else:
            targets = torch.zeros_like(item_seq)
        targets[rows, seq_len - 1] = interaction[self.POS_ITEM_ID]
        return self.next_item_loss(self.sequence_states(item_seq), targets, item_seq).mean()

    def next_item_loss(
        self, states: torch.Tensor, targets: torch.Tensor, item_seq: torch.Tensor
    ) -> torch.Tensor:
        """Loss of every position with a target: `targets` [B, L] (0: none) predicted from `states`
        [B, L, H] of the input sequences `item_seq` [B, L]; one value per target, in row-major order."""
        valid = targets > 0
        wanted = targets[valid]
        if self.loss_type == "CE":
            return losses.ce_from_states(states[valid], self.item_embedding.weight, wanted)
        pos = (states[valid] * self.item_embedding(wanted)).sum(-1)
        neg = self.negative_scores(states, valid, wanted, item_seq)
        return losses.sampled_loss(self.loss_type, pos, neg, self.n_items, self.sce_alpha, self.nce_c)

    def negative_scores(
        self, states: torch.Tensor, valid: torch.Tensor, targets: torch.Tensor, item_seq: torch.Tensor
    ) -> torch.Tensor:
        """Scores [P, K] of the negatives of the P positions with a target, drawn per position, per
        sequence or per batch (`negative_sharing`). Shared negatives cost one [P, H] x [H, K] product
        instead of gathering P x K embeddings; one that equals a position's target scores -inf there
        under `negative_exclude: positive` (it contributes nothing). Per-position negatives are
        picked from the full score matrix where the catalogue is small (`losses.FULL_SCORES_BELOW`)."""
        k, rows = self.num_negatives, torch.arange(len(states), device=states.device)
        rows = rows.unsqueeze(1).expand_as(valid)[valid]
        if self.negative_sharing == "position":
            history = item_seq[rows] if self.negative_exclude == "history" else None
            negatives = self._sample(targets, history)
            return losses.negative_scores_from_states(states[valid], self.item_embedding.weight, negatives)
        if self.negative_sharing == "sequence":
            drawn = losses.sample_negatives((len(states), k), self.n_items, self.generator).to(states.device)
            scores = torch.bmm(states, self.item_embedding(drawn).transpose(1, 2))[valid]
            negatives = drawn[rows]
        else:
            drawn = losses.sample_negatives((k,), self.n_items, self.generator).to(states.device)
            scores = states[valid] @ self.item_embedding(drawn).T
            negatives = drawn.expand(len(targets), k)
        if self.negative_exclude == "positive":
            scores = scores.masked_fill(negatives == targets.unsqueeze(1), float("-inf"))
        return scores

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
