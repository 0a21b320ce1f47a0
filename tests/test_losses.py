"""Each loss against a direct, slow computation from its formula."""

import math

import pytest
import torch

from recbole_llm import losses

torch.manual_seed(0)
POS = torch.randn(6, dtype=torch.float64) * 3
NEG = torch.randn(6, 5, dtype=torch.float64) * 3


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def reference(name, pos, neg, n_items=1000, alpha=100.0, c=10.0):
    out = []
    for p, ns in zip(pos.tolist(), neg.tolist()):
        k = len(ns)
        if name == "SCE":
            out.append(-math.log(math.exp(p) / (math.exp(p) + alpha * sum(math.exp(n) for n in ns))))
        elif name == "NCE":
            s = math.log(n_items / k) - c
            out.append(-math.log(sigmoid(p + s)) - sum(math.log(1 - sigmoid(n + s)) for n in ns))
        elif name == "BCE":
            out.append(-math.log(sigmoid(p)) - sum(math.log(1 - sigmoid(n)) for n in ns))
        elif name == "BPR":
            out.append(sum(-math.log(sigmoid(p - n)) for n in ns) / k)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("name", ["SCE", "NCE", "BCE", "BPR"])
def test_sampled_losses_match_their_formulas(name):
    got = losses.sampled_loss(name, POS, NEG, n_items=1000, alpha=100.0, c=10.0)
    assert torch.allclose(got, reference(name, POS, NEG), rtol=1e-9, atol=1e-9)


def test_ssm_is_sce_with_alpha_one_and_ce_is_full_softmax():
    assert torch.allclose(
        losses.sampled_loss("SSM", POS, NEG, 1000, 100.0, 10.0), reference("SCE", POS, NEG, alpha=1.0)
    )


@pytest.mark.parametrize("uniform", [False, True])  # True: gradients taken in the forward pass, scaled
def test_chunked_ce_matches_full_softmax_and_its_gradients(uniform):
    states = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, 4, 2, 2, 1, 0])
    scores = (states @ weight.T).tolist()
    expected = [
        -math.log(math.exp(scores[i][t]) / sum(math.exp(v) for v in scores[i]))
        for i, t in enumerate(target.tolist())
    ]
    upstream = torch.full((7,), 0.3, dtype=torch.float64) if uniform else torch.rand(7, dtype=torch.float64)
    got = losses.ce_from_states(states, weight, target, chunk=3)  # chunks of 3, 3 and 1 rows
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64))
    grads = torch.autograd.grad((got * upstream).sum(), (states, weight))
    direct = torch.nn.functional.cross_entropy(states @ weight.T, target, reduction="none")
    want = torch.autograd.grad((direct * upstream).sum(), (states, weight))
    assert all(torch.allclose(g, w) for g, w in zip(grads, want))
    with torch.no_grad():  # no gradient wanted: the forward pass does not take them
        assert torch.allclose(losses.ce_from_states(states, weight, target, chunk=3), got.detach())


@pytest.mark.parametrize("name", losses.SAMPLED_LOSSES)
def test_gradients_are_finite_even_for_extreme_scores(name):
    pos = torch.tensor([80.0, -80.0, 0.0], requires_grad=True)
    neg = torch.tensor([[-80.0, 80.0], [80.0, 80.0], [0.0, 0.0]], requires_grad=True)
    loss = losses.sampled_loss(name, pos, neg, n_items=50, alpha=100.0, c=10.0).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()


def test_negative_sampler_is_seeded_uniform_and_skips_padding():
    draw = lambda seed: losses.sample_negatives((2000, 10), 11, torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = draw(1), draw(1), draw(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    counts = torch.bincount(a.reshape(-1), minlength=11)
    assert counts[0] == 0 and counts[1:].min() > 0.9 * 2000 and counts[1:].max() < 1.1 * 2000


@pytest.mark.parametrize("full", [True, False])
def test_negative_scores_match_dot_products_and_their_gradients(full):
    gen = torch.Generator().manual_seed(3)
    states = torch.randn(300, 4, dtype=torch.float64, generator=gen, requires_grad=True)  # 2 chunks
    weight = torch.randn(9, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    negatives = torch.randint(1, 9, (300, 6), generator=gen)
    negatives[0] = 5  # one item repeated across a row: its gradients add up
    upstream = torch.rand(300, 6, dtype=torch.float64, generator=gen)
    got = losses.negative_scores_from_states(states, weight, negatives, full=full)
    grads = torch.autograd.grad((got * upstream).sum(), (states, weight))
    expected = torch.tensor(
        [
            [sum(states[p, h].item() * weight[n, h].item() for h in range(4)) for n in row]
            for p, row in enumerate(negatives.tolist())
        ],
        dtype=torch.float64,
    )
    grad_states = torch.zeros(300, 4, dtype=torch.float64)
    grad_weight = torch.zeros(9, 4, dtype=torch.float64)
    for p, row in enumerate(negatives.tolist()):
        for k, n in enumerate(row):
            grad_states[p] += upstream[p, k] * weight[n].detach()
            grad_weight[n] += upstream[p, k] * states[p].detach()
    assert torch.allclose(got, expected)
    assert torch.allclose(grads[0], grad_states) and torch.allclose(grads[1], grad_weight)
