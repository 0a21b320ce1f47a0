"""Passes of similar lengths: every row once, within the token budget, and the fewest padded positions."""

import itertools

import numpy as np
import pytest
import torch

from recbole_llm.models.sequential.length_passes import length_passes


def cost(lengths: list[int], passes: list[list[int]], overhead: int) -> int:
    return sum(len(rows) * max(lengths[r] for r in rows) + overhead for rows in passes)


def brute_force_cost(lengths: list[int], overhead: int) -> int:
    """The cheapest split of the length-sorted rows into contiguous passes, every split tried."""
    ordered = sorted(lengths)
    best = None
    for cuts in itertools.product([False, True], repeat=len(ordered) - 1):
        bounds = [0, *[i + 1 for i, c in enumerate(cuts) if c], len(ordered)]
        total = sum((b - a) * ordered[b - 1] + overhead for a, b in zip(bounds, bounds[1:]))
        best = total if best is None else min(best, total)
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("overhead", [0, 3, 20])
def test_passes_cover_every_row_once_at_the_least_padding(seed, overhead):
    lengths = np.random.default_rng(seed).integers(1, 12, size=9).tolist()
    passes = [p.tolist() for p in length_passes(torch.tensor(lengths), tokens=10**6, overhead=overhead)]
    assert sorted(itertools.chain(*passes)) == list(range(len(lengths)))
    assert cost(lengths, passes, overhead) == brute_force_cost(lengths, overhead)


def test_no_overhead_gives_a_pass_per_length_and_a_large_one_a_single_pass():
    lengths = torch.tensor([3, 1, 3, 2, 1])
    by_length = [p.tolist() for p in length_passes(lengths, tokens=100, overhead=0)]
    assert by_length == [[1, 4], [3], [0, 2]]  # stable: equal lengths keep their order
    assert [p.tolist() for p in length_passes(lengths, tokens=100, overhead=1000)] == [[1, 4, 3, 0, 2]]


def test_equal_lengths_split_into_passes_within_the_token_budget():
    passes = length_passes(torch.full((512,), 200), tokens=25_600)
    assert [len(p) for p in passes] == [128] * 4
    passes = length_passes(torch.tensor([5] * 7 + [2] * 3), tokens=12, overhead=0)
    assert all(len(p) * 5 <= 15 for p in passes[1:]) and len(passes[0]) * 2 <= 12
    assert sorted(torch.cat(passes).tolist()) == list(range(10))
