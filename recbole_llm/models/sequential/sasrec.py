"""SASRec with the loss family (CE, SCE, NCE, BCE, BPR, SSM) and all-position training."""

import torch
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

from recbole_llm.models.sequential.fused_attention import transformer_last_states, transformer_states
from recbole_llm.models.sequential.length_passes import LengthPassesModel, trimmed
from recbole_llm.models.sequential.next_item import NextItemModel


class SASRec(LengthPassesModel, NextItemModel, RecBoleSASRec):
    def sequence_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position (causal attention): RecBole's forward, with fused kernels."""
        return transformer_states(self.trm_encoder, self._inputs(item_seq), self.training)

    def _last_states(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The last item's state, the last layer run there only."""
        inputs = self._inputs(trimmed(item_seq, lengths))
        return transformer_last_states(self.trm_encoder, inputs, lengths - 1, self.training)

    def _inputs(self, item_seq: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        return self.dropout(
            self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions))
        )
