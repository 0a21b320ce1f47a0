"""SASRec's transformer (RecBole's `TransformerEncoder`, its very parameters) run with fused kernels.

RecBole's layers build the [batch, heads, length, length] attention scores by hand (scale, additive
mask, softmax, dropout, each a pass over the largest tensor of the model) and its GELU out of five
element-wise ops; on CPU these passes, not the matmuls, dominated a SASRec step. Here the attention is
`F.scaled_dot_product_attention` (in CPU training `chunked_attention`, which beats its math path
with dropout and matches its flash kernel without), the three projections one matmul, and GELU
`F.gelu`. Same parameters, same function: at every position that
has an item the states equal RecBole's to float rounding. The causal mask alone suffices because
RecBole's sequences are right-padded: a position that holds an item never sees a padded one, whose
own states (never read) are the only ones that differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.layers import TransformerEncoder, TransformerLayer

from recbole_llm.models.sequential.chunked_attention import causal_attention


def transformer_states(encoder: TransformerEncoder, hidden: torch.Tensor, training: bool) -> torch.Tensor:
    """The last layer's states [B, L, H] of `encoder` over right-padded inputs `hidden`, causally."""
    for layer in encoder.layer:
        hidden = _layer(layer, hidden, training)
    return hidden


def _layer(layer: TransformerLayer, hidden: torch.Tensor, training: bool) -> torch.Tensor:
    attention, feed_forward = layer.multi_head_attention, layer.feed_forward
    batch, length, _ = hidden.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size
    projections = (attention.query, attention.key, attention.value)
    qkv = F.linear(
        hidden, torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections])
    )
    query, key, value = qkv.view(batch, length, 3, heads, size).permute(2, 0, 3, 1, 4)
    dropout = attention.attn_dropout.p if training else 0.0
    if training and query.device.type == "cpu":
        context = causal_attention(query, key, value, dropout)
    else:
        context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=True)
    context = attention.dense(context.transpose(1, 2).reshape(batch, length, heads * size))
    hidden = attention.LayerNorm(attention.out_dropout(context) + hidden)
    act = feed_forward.intermediate_act_fn
    inner = (
        F.gelu(feed_forward.dense_1(hidden))
        if act == feed_forward.gelu
        else act(feed_forward.dense_1(hidden))
    )
    return feed_forward.LayerNorm(feed_forward.dropout(feed_forward.dense_2(inner)) + hidden)
