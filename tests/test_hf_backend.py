"""The hf backend against plain transformers: same logits and same greedy answers, prompt by prompt."""

import pytest
import torch

pytest.importorskip("transformers")

from recbole_llm.llm.backend import Prompt  # noqa: E402
from recbole_llm.llm.backends.hf import HFBackend, _common_prefix_length  # noqa: E402
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
