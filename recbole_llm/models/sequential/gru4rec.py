"""GRU4Rec with the loss family (CE, SCE, NCE, BCE, BPR, SSM) and all-position training."""

import torch
from recbole.model.sequential_recommender.gru4rec import GRU4Rec as RecBoleGRU4Rec

from recbole_llm.models.sequential.next_item import NextItemModel


class GRU4Rec(NextItemModel, RecBoleGRU4Rec):
    def sequence_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position (a GRU is causal), as RecBole's forward computes it."""
        output, _ = self.gru_layers(self.emb_dropout(self.item_embedding(item_seq)))
        return self.dense(output)
