"""SASRec with the loss family (CE, SCE, NCE, BCE, BPR, SSM) and all-position training."""

import torch
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

from recbole_llm.models.sequential.next_item import NextItemModel


class SASRec(NextItemModel, RecBoleSASRec):
    def sequence_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position (causal attention), as RecBole's forward computes it."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        hidden = self.dropout(
            self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions))
        )
        mask = self.get_attention_mask(item_seq)
        return self.trm_encoder(hidden, mask, output_all_encoded_layers=True)[-1]
