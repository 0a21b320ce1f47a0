"""Next-item training shared by the plugin's sequential models: a loss family and all-position
training.

All-position training runs one forward pass per user sequence and predicts the next item at every
position of a causal model, instead of RecBole's one training row per prefix: the same targets,
~sequence-length times fewer tokens through the network.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.utils import InputType

from recbole_llm import losses
from recbole_llm.data.split import subset_loader
from recbole_llm.errors import RecBoleLLMError, did_you_mean

NEGATIVE_EXCLUDE = ("none", "positive", "history")


def last_prefix_rows(uids: np.ndarray) -> np.ndarray:
    """Mask of each user's last row in a user-sorted, time-ordered augmented dataset."""
    return np.append(uids[1:] != uids[:-1], True)


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
        self.sce_alpha, self.nce_c = float(config["sce_alpha"]), float(config["nce_c"])
        self.negative_exclude = config["negative_exclude"]
        if self.negative_exclude not in NEGATIVE_EXCLUDE:
            raise RecBoleLLMError(f"negative_exclude must be one of {NEGATIVE_EXCLUDE}.")
        k = config["num_negatives"]
        self.num_negatives = config["loss_num_negatives"][loss_type] if k is None else k
        if loss_type != "CE" and (not isinstance(self.num_negatives, int) or self.num_negatives < 1):
            raise RecBoleLLMError(
                f"loss_type={loss_type} needs num_negatives >= 1, not {self.num_negatives}."
            )
        self.generator = torch.Generator().manual_seed(config["seed"])

    @classmethod
    def adapt_train_loader(cls, config, loader):
        """All-position training needs only each user's longest training prefix."""
        if not config["all_positions"]:
            return loader
        ds = loader._dataset
        return subset_loader(
            config, loader, last_prefix_rows(ds.inter_feat[ds.uid_field].numpy()), shuffle=True
        )

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
        return self.next_item_loss(states, targets, item_seq[rows]).mean()

    def next_item_loss(
        self, states: torch.Tensor, targets: torch.Tensor, history: torch.Tensor
    ) -> torch.Tensor:
        """Per-position loss of predicting `targets` [P] from `states` [P, H]."""
        if self.loss_type == "CE":
            return losses.ce(states @ self.item_embedding.weight.T, targets)
        negatives = self._sample(targets, history)
        pos = (states * self.item_embedding(targets)).sum(-1)
        neg = torch.einsum("ph,pkh->pk", states, self.item_embedding(negatives))
        return losses.sampled_loss(self.loss_type, pos, neg, self.n_items, self.sce_alpha, self.nce_c)

    def _sample(self, targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
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


def _check_loss(loss_type: str) -> str:
    if loss_type not in losses.LOSSES:
        raise RecBoleLLMError(
            f"Unknown loss_type {loss_type!r}; choose from {', '.join(losses.LOSSES)}."
            + did_you_mean(str(loss_type), losses.LOSSES)
        )
    return loss_type
