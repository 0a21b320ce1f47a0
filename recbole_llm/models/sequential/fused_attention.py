"""SASRec's transformer (RecBole's `TransformerEncoder`, its very parameters) run with fused kernels.

RecBole's layers build the [batch, heads, length, length] attention scores by hand (scale, additive
mask, softmax, dropout, each a pass over the largest tensor of the model) and its GELU out of five
element-wise ops; on CPU these passes, not the matmuls, dominated a SASRec step. Here the attention is
`F.scaled_dot_product_attention` (in CPU training `chunked_attention`, faster than its math path
with dropout on ML-1M and as fast as its flash kernel without), the three projections one matmul, and GELU
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


def transformer_last_states(
    encoder: TransformerEncoder, hidden: torch.Tensor, last: torch.Tensor, training: bool
) -> torch.Tensor:
    """The last layer's state [B, H] at position `last[b]` of each sequence of `hidden` [B, L, H].

    Only that state is scored (evaluation, prediction): the final layer needs keys and values at every
    position but its query, attention, feed-forward and norms at that one, which saves ~40% of a
    2-layer forward.
    """
    *earlier, final = encoder.layer
    for layer in earlier:
        hidden = _layer(layer, hidden, training)
    return _layer(final, hidden, training, at=last)


def _project(hidden: torch.Tensor, projections: tuple[torch.nn.Linear, ...], heads: int) -> torch.Tensor:
    """The projections of `hidden` [B, L, H] in one matmul, as [len(projections), B, heads, L, size]."""
    weight, bias = (torch.cat([getattr(p, name) for p in projections]) for name in ("weight", "bias"))
    batch, length, _ = hidden.shape
    return (
        F.linear(hidden, weight, bias).view(batch, length, len(projections), heads, -1).permute(2, 0, 3, 1, 4)
    )


def _layer(
    layer: TransformerLayer, hidden: torch.Tensor, training: bool, at: torch.Tensor | None = None
) -> torch.Tensor:
    """One layer at every position ([B, L, H]), or with `at` [B] only at position `at[b]` ([B, H])."""
    attention, feed_forward = layer.multi_head_attention, layer.feed_forward
    heads = attention.num_attention_heads
    dropout = attention.attn_dropout.p if training else 0.0
    if at is None:
        query, key, value = _project(hidden, (attention.query, attention.key, attention.value), heads)
        if training and query.device.type == "cpu":
            context = causal_attention(query, key, value, dropout)
        else:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=True)
    else:
        key, value = _project(hidden, (attention.key, attention.value), heads)
        visible = torch.arange(hidden.size(1), device=at.device) <= at.unsqueeze(1)  # causal, at `at`
        hidden = hidden[torch.arange(len(at), device=at.device), at]
        query = attention.query(hidden).view(len(at), heads, 1, -1)
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=visible[:, None, None, :], dropout_p=dropout
        )
    context = attention.dense(context.transpose(1, 2).reshape(hidden.shape))
    hidden = attention.LayerNorm(attention.out_dropout(context) + hidden)
    act = feed_forward.intermediate_act_fn
    inner = (
        F.gelu(feed_forward.dense_1(hidden))
        if act == feed_forward.gelu
        else act(feed_forward.dense_1(hidden))
    )
    return feed_forward.LayerNorm(feed_forward.dropout(feed_forward.dense_2(inner)) + hidden)
