"""SASRec with the loss family (CE, SCE, NCE, BCE, BPR, SSM) and all-position training."""

import torch
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

from recbole_llm.models.sequential.fused_attention import transformer_last_states, transformer_states
from recbole_llm.models.sequential.length_passes import length_passes, trimmed
from recbole_llm.models.sequential.next_item import NextItemModel

# At most this many positions a pass of a batch on CPU (evaluation, and training through
# evaluation.passes; `length_passes`): a layer's tensors stay near cache size. At ML-1M shapes (200
# positions, one thread) the evaluation forward of 4096 users took 6.0 s in passes of 128 users, 6.2 s
# of 64, 7.4 s of 256, 10.4 s in one pass (16.4 s with the last layer at every position); a 512-user
# training step 0.85x (CE) and 0.87x (SCE) of one pass in passes of 128 (benchmarks/passes_ab.py).
PASS_TOKENS = 25_600


class SASRec(NextItemModel, RecBoleSASRec):
    def sequence_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position (causal attention): RecBole's forward, with fused kernels."""
        return transformer_states(self.trm_encoder, self._inputs(item_seq), self.training)

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """The state at each sequence's last item (what scoring reads), its last layer run there only;
        without gradients on CPU, in passes of similar lengths (`length_passes`)."""
        if torch.is_grad_enabled() or item_seq.is_cuda:
            return self._last_states(item_seq, item_seq_len)
        states = self.item_embedding.weight.new_empty(len(item_seq), self.hidden_size)
        for index in length_passes(item_seq_len, PASS_TOKENS):
            states[index] = self._last_states(item_seq[index], item_seq_len[index])
        return states

    def loss_passes(self, interaction):
        """The batch in passes of similar lengths (`length_passes`), each with its share of the batch's
        targets (all-position training: one per item of a sequence; otherwise one per sequence)."""
        lengths = interaction[self.ITEM_SEQ_LEN]
        targets = lengths if self.all_positions else torch.ones_like(lengths)
        total = targets.sum()
        for index in length_passes(lengths, PASS_TOKENS):
            yield interaction[index], float(targets[index].sum() / total)

    def _last_states(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        inputs = self._inputs(trimmed(item_seq, lengths))
        return transformer_last_states(self.trm_encoder, inputs, lengths - 1, self.training)

    def _inputs(self, item_seq: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        return self.dropout(
            self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions))
        )
