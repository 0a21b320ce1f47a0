"""ALRO's list-wise losses against slow loop references written from their formulas."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from recbole_llm.llm import listwise_losses as ll

DT = torch.float64


def softmax(values):
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def ref_soft_lambda(examples, gamma=2.0, sigma=1.0, gain="exp", weighting="delta_ndcg"):
    """examples: list of (logits [T][N] nested lists, gains [N]) of any sizes; loops everywhere."""
    total = 0.0
    for logits, gains in examples:
        n, t_len = len(gains), len(logits)
        p = [softmax(row) for row in logits]
        pos = []
        for i in range(n):
            q = softmax([gamma * p[t][i] for t in range(t_len)])
            pos.append(sum(t * q[t] for t in range(t_len)))
        order = sorted(range(n), key=lambda i: (-gains[i], i))
        rank = {item: r for r, item in enumerate(order)}
        big_g = [2.0**g - 1.0 if gain == "exp" else g for g in gains]
        idcg = sum(big_g[i] / math.log2(2 + rank[i]) for i in range(n))
        loss = 0.0
        for i in range(n):
            for j in range(n):
                if not gains[i] > gains[j]:
                    continue
                if weighting == "delta_ndcg":
                    delta = abs(1 / math.log2(2 + rank[i]) - 1 / math.log2(2 + rank[j]))
                else:
                    k = abs(rank[i] - rank[j])
                    delta = 1 / math.log2(1 + k) - 1 / math.log2(2 + k)
                w = abs(big_g[i] - big_g[j]) * delta / idcg
                loss += w * math.log(1 + math.exp(-sigma * (pos[j] - pos[i])))
        total += loss
    return total / len(examples)


def pad(examples, value=0.0):
    """Padded [B, T, N] logits, [B, N] gains, candidate and position masks from ragged examples."""
    b, t_max = len(examples), max(len(x[0]) for x in examples)
    n_max = max(len(x[1]) for x in examples)
    logits = torch.randn(b, t_max, n_max, dtype=DT) * 7  # garbage in the padding on purpose
    gains = torch.full((b, n_max), value, dtype=DT)
    mask = torch.zeros(b, n_max, dtype=torch.bool)
    position_mask = torch.zeros(b, t_max, dtype=torch.bool)
    for k, (lg, g) in enumerate(examples):
        logits[k, : len(lg), : len(g)] = torch.tensor(lg, dtype=DT)
        gains[k, : len(g)] = torch.tensor(g, dtype=DT)
        mask[k, : len(g)] = True
        position_mask[k, : len(lg)] = True
    return logits, gains, mask, position_mask


def random_examples(sizes, seed):
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            (torch.randn(t, n, generator=gen, dtype=DT) * 3).tolist(),
            torch.randint(0, 4, (n,), generator=gen).to(DT).tolist(),
        )
        for t, n in sizes
    ]


@pytest.mark.parametrize("gain", ["exp", "linear"])
@pytest.mark.parametrize("weighting", ["delta_ndcg", "ndcg_loss2"])
def test_soft_lambda_matches_loop_reference(gain, weighting):
    examples = random_examples([(5, 5)] * 4, seed=1)
    logits = torch.tensor([x[0] for x in examples], dtype=DT)
    gains = torch.tensor([x[1] for x in examples], dtype=DT)
    for gamma, sigma in [(2.0, 1.0), (5.0, 0.5)]:
        got = ll.soft_lambda_loss(logits, gains, gamma, sigma, gain=gain, weighting=weighting)
        expected = ref_soft_lambda(examples, gamma, sigma, gain, weighting)
        assert abs(got.item() - expected) < 1e-10


def test_soft_lambda_padded_batch_matches_reference_and_has_clean_gradients():
    examples = random_examples([(3, 6), (6, 6), (2, 4), (4, 5), (1, 3)], seed=2)
    logits, gains, mask, position_mask = pad(examples, value=9.0)  # padding gains above every real one
    logits.requires_grad_(True)
    got = ll.soft_lambda_loss(logits, gains, mask=mask, position_mask=position_mask)
    assert abs(got.item() - ref_soft_lambda(examples)) < 1e-10
    (grad,) = torch.autograd.grad(got, logits)
    assert torch.isfinite(grad).all()
    real = position_mask[:, :, None] & mask[:, None, :]
    assert (grad[~real] == 0).all() and grad[real].abs().sum() > 0


def test_soft_lambda_gradcheck():
    logits = torch.randn(2, 3, 4, dtype=DT, requires_grad=True)
    gains = torch.tensor([[3.0, 0.0, 1.0, 2.0], [1.0, 1.0, 0.0, 2.0]], dtype=DT)
    assert torch.autograd.gradcheck(lambda x: ll.soft_lambda_loss(x, gains), (logits,))


@pytest.mark.parametrize("gain", ["exp", "linear"])
def test_delta_ndcg_weights_are_the_ndcg_change_of_a_swap(gain):
    gen = torch.Generator().manual_seed(3)
    gains = torch.randint(0, 4, (3, 6), generator=gen).to(DT)  # ties included
    weights = ll.pair_weights(gains, gain=gain)
    for b in range(3):
        g = gains[b].tolist()
        big_g = [2.0**x - 1.0 if gain == "exp" else x for x in g]
        ideal = sorted(range(6), key=lambda i: (-g[i], i))

        def dcg(order, big_g=big_g):
            return sum(big_g[item] / math.log2(2 + r) for r, item in enumerate(order))

        for i, j in itertools.product(range(6), repeat=2):
            swapped = list(ideal)
            a, c = swapped.index(i), swapped.index(j)
            swapped[a], swapped[c] = swapped[c], swapped[a]
            expected = abs(dcg(ideal) - dcg(swapped)) / dcg(ideal)
            assert abs(weights[b, i, j].item() - expected) < 1e-12


def test_ideal_ranks_sort_by_decreasing_gain_with_stable_ties_and_padding_last():
    gains = torch.tensor([[1.0, 3.0, 1.0, 5.0]])
    assert ll.ideal_ranks(gains).tolist() == [[2, 1, 3, 0]]
    mask = torch.tensor([[True, True, True, False]])
    assert ll.ideal_ranks(gains, mask).tolist() == [[1, 0, 2, 3]]
    assert ll.order_gains(torch.tensor([[2, 0, 1]])).tolist() == [[1.0, 3.0, 2.0]]


def sharp_order(order_of_position, n, scale=8.0):
    """Logits [T, N] putting candidate order_of_position[t] at position t."""
    logits = torch.zeros(len(order_of_position), n, dtype=DT)
    logits[torch.arange(len(order_of_position)), torch.tensor(order_of_position)] = scale
    return logits


@pytest.mark.parametrize("n,t_len,seed", [(6, 6, 0), (6, 3, 1), (8, 8, 2)])
def test_loss_falls_as_logits_move_to_the_ideal_order(n, t_len, seed):
    gen = torch.Generator().manual_seed(seed)
    gains = torch.randperm(n, generator=gen).to(DT)[None]  # distinct grades
    ideal = ll.ideal_ranks(gains)[0]
    by_rank = torch.argsort(ideal).tolist()  # candidate of ideal rank r
    target = sharp_order(by_rank[:t_len], n)[None]
    start = torch.randn(1, t_len, n, generator=gen, dtype=DT)
    steps = torch.linspace(0, 1, 6)
    losses = [ll.soft_lambda_loss((1 - a) * start + a * target, gains).item() for a in steps]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    reversed_order = sharp_order(by_rank[::-1][:t_len], n)[None]
    assert ll.soft_lambda_loss(reversed_order, gains) > ll.soft_lambda_loss(target, gains)


def test_ideal_order_gives_increasing_expected_positions():
    target = sharp_order([2, 0, 3, 1], 4)[None]
    pos = ll.expected_positions(target)[0]
    assert pos[2] < pos[0] < pos[3] < pos[1]


@pytest.mark.parametrize("seed", range(5))
def test_gradient_step_moves_the_first_candidate_earlier(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(1, 2, 2, generator=gen, dtype=DT) * 2).requires_grad_(True)
    gains = torch.tensor([[1.0, 0.0]], dtype=DT)  # candidate 0 should be first
    (grad,) = torch.autograd.grad(ll.soft_lambda_loss(logits, gains), logits)
    before = ll.expected_positions(logits.detach())[0, 0]
    after = ll.expected_positions(logits.detach() - 0.1 * grad)[0, 0]
    assert after < before


def permute_slots(item_logits, perm):
    """View b's slot logits of an item-wise scorer: slot k shows candidate perm[k]."""
    return item_logits.gather(-1, perm[:, None, :].expand_as(item_logits))


def kl(x, y):
    return sum(a * math.log(a / b) for a, b in zip(x, y))


def ref_perm_loss(logits_a, logits_b, perm, sizes, divergence):
    """Loops over examples, real positions and real items; sizes: (T_b, N_b) of each example."""
    total = 0.0
    for b, (t_len, n) in enumerate(sizes):
        per_example = 0.0
        for t in range(t_len):
            p_a = softmax(logits_a[b][t][:n])
            slots = softmax(logits_b[b][t][:n])
            p_b = [0.0] * n
            for k in range(n):
                p_b[perm[b][k]] = slots[k]
            if divergence == "kl":
                d = kl(p_a, p_b)
            elif divergence == "sym_kl":
                d = 0.5 * (kl(p_a, p_b) + kl(p_b, p_a))
            else:
                m = [0.5 * (x + y) for x, y in zip(p_a, p_b)]
                d = 0.5 * (kl(p_a, m) + kl(p_b, m))
            per_example += d
        total += per_example / t_len
    return total / len(sizes)


def random_perms(sizes, n_max, gen):
    perm = torch.arange(n_max).repeat(len(sizes), 1)
    for b, (_, n) in enumerate(sizes):
        perm[b, :n] = torch.randperm(n, generator=gen)
    return perm


DIVERGENCES = ["sym_kl", "kl", "js"]


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_permutation_loss_is_zero_for_a_permutation_invariant_scorer(divergence):
    gen = torch.Generator().manual_seed(4)
    item_logits = torch.randn(4, 3, 6, generator=gen, dtype=DT) * 4
    perm = random_perms([(3, 6)] * 4, 6, gen)
    view_b = permute_slots(item_logits, perm)
    got = ll.permutation_sensitive_loss(item_logits, view_b, perm, divergence=divergence)
    assert abs(got.item()) < 1e-12


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_permutation_loss_is_positive_for_a_position_biased_scorer(divergence):
    gen = torch.Generator().manual_seed(5)
    item_logits = torch.randn(4, 3, 6, generator=gen, dtype=DT)
    slot_bias = torch.tensor([3.0, 0, 0, 0, 0, 0], dtype=DT)  # slot A wins whatever its item
    perm = torch.stack([torch.roll(torch.arange(6), s) for s in (1, 2, 3, 5)])
    view_a = item_logits + slot_bias
    view_b = permute_slots(item_logits, perm) + slot_bias
    got = ll.permutation_sensitive_loss(view_a, view_b, perm, divergence=divergence)
    assert got.item() > 1e-3


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_permutation_loss_matches_loop_reference_with_padding(divergence):
    gen = torch.Generator().manual_seed(6)
    sizes = [(3, 5), (5, 5), (2, 3), (1, 4)]
    logits_a = torch.randn(4, 5, 5, generator=gen, dtype=DT) * 3
    logits_b = torch.randn(4, 5, 5, generator=gen, dtype=DT) * 3
    perm = random_perms(sizes, 5, gen)
    mask = torch.tensor([[k < n for k in range(5)] for _, n in sizes])
    position_mask = torch.tensor([[t < t_len for t in range(5)] for t_len, _ in sizes])
    logits_a.requires_grad_(True)
    got = ll.permutation_sensitive_loss(logits_a, logits_b, perm, mask, position_mask, divergence)
    expected = ref_perm_loss(logits_a.tolist(), logits_b.tolist(), perm.tolist(), sizes, divergence)
    assert abs(got.item() - expected) < 1e-10
    (grad,) = torch.autograd.grad(got, logits_a)
    assert torch.isfinite(grad).all()
    assert (grad[~(position_mask[:, :, None] & mask[:, None, :])] == 0).all()
    full_perm = perm[:1].expand(4, 5)  # no masks: every example at full size
    full = ll.permutation_sensitive_loss(logits_a, logits_b, full_perm, divergence=divergence)
    args = logits_a.tolist(), logits_b.tolist(), full_perm.tolist(), [(5, 5)] * 4, divergence
    assert abs(full.item() - ref_perm_loss(*args)) < 1e-10


def test_alro_loss_combines_with_the_paper_weights():
    sft, lam, perm = torch.tensor(1.5), torch.tensor(2.0), torch.tensor(3.0)
    assert ll.alro_loss(sft, lam, perm).item() == pytest.approx(1.5 + 0.1 * 2.0 + 0.01 * 3.0)
    assert ll.alro_loss(sft, lam, perm, alpha=0.5, beta=2.0).item() == pytest.approx(1.5 + 1.0 + 6.0)
    assert (ll.ALRO_ALPHA, ll.ALRO_BETA, ll.ALRO_GAMMA) == (0.1, 0.01, 2.0)
