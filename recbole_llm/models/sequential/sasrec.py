"""SASRec with the loss family (CE, SCE, NCE, BCE, BPR, SSM) and all-position training."""

import torch
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

from recbole_llm.models.sequential.fused_attention import transformer_states
from recbole_llm.models.sequential.next_item import NextItemModel


class SASRec(NextItemModel, RecBoleSASRec):
    def sequence_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position (causal attention): RecBole's forward, with fused kernels."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        hidden = self.dropout(
            self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions))
        )
        return transformer_states(self.trm_encoder, hidden, self.training)
