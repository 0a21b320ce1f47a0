"""Causal attention (with attention dropout) for CPU training, a few heads' score blocks at a time.

On CPU `F.scaled_dot_product_attention` runs an unfused math path once attention dropout is drawn:
it draws the mask with `bernoulli_` (~9 ns an element), multiplies it in as floats, checks every row
for -inf and keeps scores, mask and dropped probabilities for backward, each a pass over the
[batch x heads, length, length] tensor, the largest of the model, far out of cache. Here the scores
of a few heads at a time (~1 MB) are built, soft-maxed, dropped and multiplied while in cache, and
rebuilt in backward instead of stored, as flash attention does; the mask takes 16 random bits an
element (four to each 64-bit draw, ~3 ns) and is kept as bytes. A Xu et al. ML-1M CE epoch took
51.7 s with it and 55.4 s with the math path (one thread, same run, benchmarks/epoch_speed.py); on
Beauty, whose passes are mostly short, 22.7 and 21.6 s: within the machine's noise.
"""

from __future__ import annotations

import torch

_LEVELS = 1 << 16  # the drop probability is rounded to a multiple of 2**-16
_BLOCK_ELEMENTS = 1 << 18  # scores built at once: ~1 MB of float32


def keep_mask(shape: tuple[int, ...], p: float) -> tuple[torch.Tensor, float]:
    """A 0/1 uint8 mask that drops each element with probability round(p * 2**16) / 2**16, drawn
    from torch's default generator, and the scale 1 / (1 - that probability) that keeps the
    expectation. uint8, not bool: multiplying by it is ~10x faster than `masked_fill` here."""
    numel = torch.Size(shape).numel()
    threshold = round(p * _LEVELS)
    draws = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)
    keep = draws.view(torch.int16)[:numel].view(shape) >= threshold - _LEVELS // 2
    return keep.view(torch.uint8), _LEVELS / (_LEVELS - threshold)


def causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, p: float) -> torch.Tensor:
    """softmax(causal(query keyᵀ / √d)) with dropout `p` (0: none), times `value`; inputs [B, heads, L, d]."""
    batch, heads, length, size = query.shape
    if p >= 1:  # every weight dropped, as torch's dropout does (the mask's scale would divide by 0)
        return value.mul(0.0)
    keep, keep_scale = keep_mask((batch * heads, length, length), p) if p > 0 else (None, 1.0)
    flat = [t.reshape(batch * heads, length, size) for t in (query, key, value)]
    return _CausalAttention.apply(*flat, keep, keep_scale).view(batch, heads, length, size)


def _blocks(query: torch.Tensor):
    length = query.size(1)
    step = max(1, _BLOCK_ELEMENTS // (length * length))
    causal = torch.full((length, length), float("-inf"), dtype=query.dtype).triu_(1)
    scale = query.size(-1) ** -0.5
    for start in range(0, len(query), step):
        yield slice(start, start + step), causal, scale


def _probs(query, key, rows: slice, causal: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.softmax(torch.baddbmm(causal, query[rows], key[rows].transpose(1, 2), alpha=scale), -1)


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, keep, keep_scale):
        out = torch.empty_like(query)
        for rows, causal, scale in _blocks(query):
            probs = _probs(query, key, rows, causal, scale)
            if keep is not None:
                probs.mul_(keep[rows])
            torch.bmm(probs, value[rows], out=out[rows])
        ctx.save_for_backward(query, key, value, keep)
        ctx.keep_scale = keep_scale
        return out.mul_(keep_scale)

    @staticmethod
    def backward(ctx, grad):
        query, key, value, keep = ctx.saved_tensors
        grads = [torch.empty_like(t) for t in (query, key, value)]
        grad = grad * ctx.keep_scale
        for rows, causal, scale in _blocks(query):
            probs = _probs(query, key, rows, causal, scale)
            grad_probs = torch.bmm(grad[rows], value[rows].transpose(1, 2))
            kept = probs
            if keep is not None:
                kept = probs * keep[rows]
                grad_probs.mul_(keep[rows])
            torch.bmm(kept.transpose(1, 2), grad[rows], out=grads[2][rows])
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype).mul_(scale)
            torch.bmm(grad_scores, key[rows], out=grads[0][rows])
            torch.bmm(grad_scores.transpose(1, 2), query[rows], out=grads[1][rows])
        return (*grads, None, None)
