"""SASRec as Kang & McAuley 2018 built it, in the PyTorch form Xu et al. 2024 trained.

RecBole's SASRec is a BERT-style encoder: post-norm layers, a 4x GELU feed-forward, positions counted
from a sequence's first item, N(0, 0.02) weights. The reference code (pmixer's SASRec.pytorch, which
Xu et al.'s CE-SCE-LLMRec copies) differs in each: item embeddings scaled by sqrt(hidden), positions
counted from the sequence's end (left padding: the latest item always sits at the last position),
the attention's query layer-normed and its residual taken from the un-normed input, a ReLU
feed-forward as wide as the hidden size, a final layer norm, Xavier initialisation. On Amazon Beauty
these choices are worth much of Xu et al.'s margin over RecBole's SASRec (benchmarks/xu2024-beauty).

The reference left-pads and masks no key, so each real query also attends to every padding slot; a
padding slot's input is zero, hence its key and value are the projections' biases. Here sequences are
right-padded (RecBole's layout, which `length_passes` cuts short) and the padding slots become one
extra key with that bias, its score raised by log(number of slots): the same attention weights
(`attend_to_padding: False` masks them, as Kang's TensorFlow code does). Dropout on that merged
weight is one draw instead of one per slot: the same expectation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_llm.models.sequential.length_passes import LengthPassesModel
from recbole_llm.models.sequential.next_item import NextItemModel


class KangSASRec(LengthPassesModel, NextItemModel, SequentialRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        hidden, self.n_heads = config["hidden_size"], config["n_heads"]
        if hidden % self.n_heads:
            raise ValueError(f"hidden_size ({hidden}) must be divisible by n_heads ({self.n_heads}).")
        self.hidden_size, self.dropout_prob = hidden, config["dropout_prob"]
        self.attend_to_padding = bool(config["attend_to_padding"])
        eps = config["layer_norm_eps"]
        self.item_embedding = nn.Embedding(self.n_items, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, self.dropout_prob, eps) for _ in range(config["n_layers"]))
        self.last_norm = nn.LayerNorm(hidden, eps=eps)
        self._init_weights()

    def _init_weights(self) -> None:
        """The reference's: Xavier-normal embeddings and output projections, Xavier-uniform
        attention projections (torch's MultiheadAttention), zero biases; the feed-forward keeps torch's
        default (the reference's 1x1 convolutions are not reinitialised)."""
        for embedding in (self.item_embedding, self.position_embedding):
            nn.init.xavier_normal_(embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()  # padding: RecBole scores item 0, never a target
        for block in self.blocks:
            nn.init.xavier_uniform_(block.in_proj.weight)
            nn.init.xavier_normal_(block.out_proj.weight)
            nn.init.zeros_(block.in_proj.bias)
            nn.init.zeros_(block.out_proj.bias)

    def sequence_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """States [B, L, H] at every position of right-padded `item_seq`, causally."""
        lengths = (item_seq > 0).sum(1)
        hidden = self._embed(item_seq, lengths)
        mask = self._padding_mask(lengths, item_seq.size(1), hidden.dtype) if self.attend_to_padding else None
        for block in self.blocks:
            hidden = block(hidden, mask, self.n_heads, self.training)
        return self.last_norm(hidden)

    def _last_states(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return NextItemModel.forward(self, item_seq, lengths)

    def _embed(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scaled item embeddings plus positions counted from each sequence's end, as left padding to
        `MAX_ITEM_LIST_LENGTH` numbers them; padding (never read) gets the last position."""
        steps = torch.arange(item_seq.size(1), device=item_seq.device)
        positions = (self.max_seq_length - lengths.unsqueeze(1) + steps).clamp(max=self.max_seq_length - 1)
        hidden = self.item_embedding(item_seq) * math.sqrt(self.hidden_size) + self.position_embedding(
            positions
        )
        return F.dropout(hidden, self.dropout_prob, self.training)

    def _padding_mask(self, lengths: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive attention mask [B, 1, L, L + 1] over [padding key, keys]: log(padding slots) for
        the padding key (-inf with none), causal for the rest; built once for every block."""
        causal = torch.ones(length, length, dtype=torch.bool, device=lengths.device).tril()
        mask = torch.zeros(len(lengths), 1, length, length + 1, dtype=dtype, device=lengths.device)
        mask[..., 0] = (self.max_seq_length - lengths).to(dtype).log().view(-1, 1, 1)
        mask[..., 1:].masked_fill_(~causal, float("-inf"))
        return mask


class _Block(nn.Module):
    """Query-normed causal self-attention, then a normed ReLU feed-forward, as the reference's block."""

    def __init__(self, hidden: int, dropout: float, eps: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.in_proj = nn.Linear(hidden, 3 * hidden)
        self.out_proj = nn.Linear(hidden, hidden)
        self.forward_norm = nn.LayerNorm(hidden, eps=eps)
        self.inner = nn.Linear(hidden, hidden)
        self.outer = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(
        self, hidden: torch.Tensor, padding_mask: torch.Tensor | None, heads: int, training: bool
    ) -> torch.Tensor:
        batch, length, width = hidden.shape
        w_q, w_kv = self.in_proj.weight.split([width, 2 * width])
        b_q, b_kv = self.in_proj.bias.split([width, 2 * width])
        query = F.linear(self.attention_norm(hidden), w_q, b_q).view(batch, length, heads, -1).transpose(1, 2)
        key, value = F.linear(hidden, w_kv, b_kv).view(batch, length, 2, heads, -1).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if training else 0.0
        if padding_mask is None:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=True)
        else:  # one key for all padding slots: the biases, scored + log(slots) by the mask
            pad_key, pad_value = (b.view(1, heads, 1, -1).expand(batch, -1, -1, -1) for b in b_kv.chunk(2))
            context = F.scaled_dot_product_attention(
                query,
                torch.cat([pad_key, key], dim=2),
                torch.cat([pad_value, value], dim=2),
                attn_mask=padding_mask,
                dropout_p=dropout,
            )
        hidden = self.out_proj(context.transpose(1, 2).reshape(batch, length, width)) + hidden
        hidden = self.forward_norm(hidden)
        inner = F.relu(F.dropout(self.inner(hidden), self.dropout, training))
        return F.dropout(self.outer(inner), self.dropout, training) + hidden
