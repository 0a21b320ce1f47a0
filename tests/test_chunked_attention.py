"""CPU training attention: blockwise causal attention with a byte dropout mask, against plain math."""

import pytest
import torch
import torch.nn.functional as F

from recbole_llm.models.sequential import chunked_attention
from recbole_llm.models.sequential.chunked_attention import _CausalAttention, causal_attention, keep_mask


def reference(query, key, value, keep, keep_scale):
    """The textbook formula on whole tensors: softmax(causal(q kᵀ / √d)) · keep · scale, times v."""
    length = query.size(-2)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    scores = (query @ key.transpose(-1, -2) / query.size(-1) ** 0.5).masked_fill(~causal, float("-inf"))
    probs = torch.softmax(scores, -1)
    if keep is not None:
        probs = probs * keep * keep_scale
    return probs @ value


@pytest.mark.parametrize("with_dropout", [True, False])
def test_blockwise_attention_and_its_gradients_equal_the_formula(monkeypatch, with_dropout):
    monkeypatch.setattr(chunked_attention, "_BLOCK_ELEMENTS", 3 * 7 * 7)  # blocks of 3 rows; 10 = 3+3+3+1
    torch.manual_seed(0)
    inputs = [torch.randn(10, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    keep = (torch.rand(10, 7, 7) > 0.3).to(torch.uint8) if with_dropout else None
    scale = 1 / 0.7 if with_dropout else 1.0
    upstream = torch.randn(10, 7, 4, dtype=torch.float64)
    results = []
    for fn in (_CausalAttention.apply, reference):
        for t in inputs:
            t.grad = None
        out = fn(*inputs, keep, scale)
        out.backward(upstream)
        results.append([out.detach(), *(t.grad.clone() for t in inputs)])
    for got, want in zip(*results):
        assert torch.allclose(got, want, atol=1e-12)
    assert torch.autograd.gradcheck(lambda q, k, v: _CausalAttention.apply(q, k, v, keep, scale), inputs)


def test_without_dropout_it_equals_torch_sdpa_in_float32():
    torch.manual_seed(1)
    query, key, value = (torch.randn(2, 3, 9, 8) for _ in range(3))
    want = F.scaled_dot_product_attention(query, key, value, is_causal=True)
    assert torch.allclose(causal_attention(query, key, value, 0.0), want, atol=1e-6)


def test_the_dropout_mask_drops_at_rate_p_in_every_byte_lane_and_keeps_the_expectation():
    torch.manual_seed(2)
    keep, scale = keep_mask((1000, 4000), 0.1)
    assert keep.dtype == torch.uint8 and set(keep.unique().tolist()) == {0, 1}
    assert scale == pytest.approx(1 / (1 - 6554 / 65536))
    dropped = 1 - keep.double()
    # each int16 lane of the 64-bit draws is uniform (a 63-bit draw would leave one lane never dropped)
    for lane in range(4):
        rate = dropped.view(-1)[lane::4].mean().item()
        assert abs(rate - 6554 / 65536) < 4 * (0.1 * 0.9 / 1e6) ** 0.5
    assert abs((keep.double() * scale).mean().item() - 1) < 1e-3
    torch.manual_seed(2)
    assert torch.equal(keep_mask((1000, 4000), 0.1)[0], keep)  # drawn from torch's seeded generator


def test_attention_dropout_is_unbiased_over_draws():
    torch.manual_seed(3)
    query, key, value = (torch.randn(1, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    mean = torch.stack([causal_attention(query, key, value, 0.3) for _ in range(4000)]).mean(0)
    assert torch.allclose(mean, causal_attention(query, key, value, 0.0), atol=0.05)


def test_dropping_every_weight_gives_zeros_as_torch_dropout_does():
    query, key, value = (torch.randn(2, 2, 5, 4, requires_grad=True) for _ in range(3))
    out = causal_attention(query, key, value, 1.0)
    assert torch.equal(out, torch.zeros(2, 2, 5, 4))
    out.sum().backward()
    assert torch.equal(value.grad, torch.zeros_like(value))
