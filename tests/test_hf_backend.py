"""The hf backend against plain transformers: same logits and same greedy answers, prompt by prompt."""

import itertools

import pytest
import torch

pytest.importorskip("transformers")

from recbole_llm.llm.backend import Prompt  # noqa: E402
from recbole_llm.llm.backends.hf import HFBackend, _common_prefix_length, prefix_runs  # noqa: E402
from tests.llm_fixtures import write_tiny_llama  # noqa: E402

SYSTEM = "You rank movies for a user."
PROMPTS = [
    Prompt("History: Heat, Alien. Candidates: A. Up B. Cars", SYSTEM, "Answer:"),
    Prompt("History: Heat, Alien. Candidates: A. Cars B. Up", SYSTEM, "Answer:"),
    Prompt("History: Fargo. Candidates: A. Up B. Big", SYSTEM, "Answer:"),
]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    folder = write_tiny_llama(tmp_path_factory.mktemp("llama"))
    return HFBackend(model_id=str(folder), batch_size=8)


def reference_next_logits(backend, prompt):
    ids = torch.tensor([backend.encode(prompt)])
    with torch.no_grad():
        return backend.model(ids).logits[0, -1]


def test_shared_prefix_batch_gives_each_prompts_own_logits(backend):
    encoded = [backend.encode(p) for p in PROMPTS]
    # The system message is shared by all three; the history by the first two (a bootstrap pair).
    assert _common_prefix_length(encoded[:2]) > _common_prefix_length(encoded) > len(SYSTEM)
    got = backend.label_logits(PROMPTS, ["A", "B"])
    ids = backend.label_token_ids(["A", "B"])
    for prompt, answer in zip(PROMPTS, got):
        want = reference_next_logits(backend, prompt)[ids]
        assert torch.allclose(torch.tensor(answer.logits), want, atol=1e-4)
        assert answer.prompt_tokens == len(backend.encode(prompt))


def test_batched_greedy_generation_equals_one_prompt_at_a_time(backend):
    got = backend.generate(PROMPTS, max_new_tokens=6)
    for prompt, answer in zip(PROMPTS, got):
        ids = torch.tensor([backend.encode(prompt)])
        with torch.no_grad():
            out = backend.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False
            )[0, ids.shape[1] :].tolist()
        eos = backend.tokenizer.eos_token_id
        out = out[: out.index(eos)] if eos in out else out
        assert answer.text == backend.tokenizer.decode(out, skip_special_tokens=True)
        assert answer.output_tokens == len(out) and answer.prompt_tokens == ids.shape[1]


def test_label_tokens_are_distinct_and_bad_dtype_fails(backend):
    assert len(set(backend.label_token_ids([chr(65 + i) for i in range(20)]))) == 20
    with pytest.raises(Exception, match="llm_dtype must be one of"):
        HFBackend(model_id=backend.model_id, dtype="float8")


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_warns_only_where_the_cpu_emulates_it(backend, monkeypatch, caplog, native):
    monkeypatch.setattr("recbole_llm.llm.backends.hf.cpu_has_bf16", lambda: native)
    with caplog.at_level("WARNING", logger="recbole_llm.llm.backends.hf"):
        HFBackend(model_id=backend.model_id, dtype="bfloat16")
    assert ("emulated" in caplog.text) is not native


def run_cost(encoded, runs):
    return sum(shared + sum(len(encoded[i]) - shared for i in run) for run, shared in runs)


def brute_force_cost(encoded):
    """Fewest tokens over every way of cutting the prompts, in order, into runs."""
    n, best = len(encoded), float("inf")
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0, *(k + 1 for k, cut in enumerate(cuts) if cut), n]
        runs = []
        for a, b in itertools.pairwise(bounds):
            members = encoded[a:b]
            shared = min(
                _common_prefix_length(members) if b - a > 1 else len(members[0]) - 1,
                min(map(len, members)) - 1,
            )
            runs.append((list(range(a, b)), shared))
        best = min(best, run_cost(encoded, runs))
    return best


def test_prefix_runs_are_optimal_and_cover_every_prompt_once():
    system, alice, bob = [1, 2, 3], [4, 5, 6, 7, 8, 9], [10, 11, 12, 13, 14]
    encoded = [
        system + alice + [20],
        system + alice + [21, 22],
        system + alice + [23],
        system + bob + [24],
        system + bob + [25, 26],
        system + [27],
        system + alice + [28],
    ]
    runs = prefix_runs(encoded)
    assert [i for run, _ in runs for i in run] == list(range(len(encoded)))
    for run, shared in runs:  # the shared length is really shared, and leaves each a token
        assert all(encoded[i][:shared] == encoded[run[0]][:shared] and len(encoded[i]) > shared for i in run)
    assert run_cost(encoded, runs) == brute_force_cost(encoded)
    assert [run for run, _ in runs][:2] == [[0, 1, 2], [3, 4]]  # a user's prompts share their history
    assert prefix_runs([[5]]) == [([0], 0)]


def test_logits_are_each_prompts_own_when_runs_span_batches(backend):
    prompts = [
        Prompt(f"History: Heat, Alien, Fargo. Will the user like {title}?", SYSTEM, "Answer:")
        for title in ("Up", "Cars", "Big", "Jaws", "Rocky")
    ] + PROMPTS
    small = HFBackend(model_id=backend.model_id, batch_size=2)
    ids = small.label_token_ids(["Yes", "No"])
    for prompt, answer in zip(prompts, small.label_logits(prompts, ["Yes", "No"])):
        want = reference_next_logits(small, prompt)[ids]
        assert torch.allclose(torch.tensor(answer.logits), want, atol=1e-4)
