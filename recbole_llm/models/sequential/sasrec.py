"""SASRec with the loss family (CE, SCE, NCE, BCE, BPR, SSM) and all-position training."""

import torch
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

from recbole_llm.models.sequential.fused_attention import transformer_last_states, transformer_states
from recbole_llm.models.sequential.next_item import NextItemModel

# Positions per pass of a batch on CPU (evaluation, and training through evaluation.passes): a layer's
# tensors stay near cache size. At ML-1M shapes (200 positions, one thread) the evaluation forward of
# 4096 users took 6.0 s in passes of 128 users, 6.2 s of 64, 7.4 s of 256, 10.4 s in one pass (16.4 s
# with the last layer at every position); a 512-user training step 0.85x (CE) and 0.87x (SCE) of one
# pass in passes of 128 (benchmarks/passes_ab.py).
PASS_TOKENS = 25_600


class SASRec(NextItemModel, RecBoleSASRec):
    def sequence_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position (causal attention): RecBole's forward, with fused kernels."""
        return transformer_states(self.trm_encoder, self._inputs(item_seq), self.training)

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """The state at each sequence's last item (what scoring reads), its last layer run there only;
        without gradients on CPU, `PASS_TOKENS` positions at a time."""
        rows = len(item_seq) if torch.is_grad_enabled() or item_seq.is_cuda else self._pass_rows(item_seq)
        last = [
            transformer_last_states(self.trm_encoder, self._inputs(seq), length - 1, self.training)
            for seq, length in zip(item_seq.split(rows), item_seq_len.split(rows))
        ]
        return torch.cat(last)

    def loss_passes(self, interaction):
        """The batch in passes of `PASS_TOKENS` positions, each with its share of the batch's targets
        (all-position training: one per item of a sequence; otherwise one per sequence)."""
        item_seq = interaction[self.ITEM_SEQ]
        targets = interaction[self.ITEM_SEQ_LEN] if self.all_positions else torch.ones(len(item_seq))
        total, rows = targets.sum(), self._pass_rows(item_seq)
        for start in range(0, len(item_seq), rows):
            index = torch.arange(start, min(start + rows, len(item_seq)), device=item_seq.device)
            yield interaction[index], float(targets[index].sum() / total)

    @staticmethod
    def _pass_rows(item_seq: torch.Tensor) -> int:
        return max(1, PASS_TOKENS // item_seq.size(1))

    def _inputs(self, item_seq: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        return self.dropout(
            self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions))
        )
