"""The vllm backend's use of vLLM's offline API, against a stand-in `vllm` module that answers as vLLM
documents it (greedy text; log-probabilities after the allowed-token restriction) from a tiny Llama.
vLLM itself needs a GPU and is not installed here: this checks our side of the contract only."""

import sys
import types
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")

from recbole_llm.errors import RecBoleLLMError  # noqa: E402
from recbole_llm.llm.backend import LLMError, Prompt  # noqa: E402
from recbole_llm.llm.backends.hf import HFBackend  # noqa: E402
from tests.llm_fixtures import write_tiny_llama  # noqa: E402

PROMPTS = [
    Prompt("History: Heat, Alien. Candidates: A. Up B. Cars C. Big", "You rank movies.", "Answer:"),
    Prompt("History: Fargo. Candidates: A. Big B. Up C. Cars", "You rank movies.", "Answer:"),
]


def fake_vllm(hf: HFBackend, seen: dict) -> types.ModuleType:
    class LLM:
        def __init__(self, model, **kwargs):
            seen["engine"] = {"model": model, **kwargs}

        def get_tokenizer(self):
            return hf.tokenizer

        @torch.no_grad()
        def generate(self, requests, params, use_tqdm=True):
            out = []
            for request in requests:
                ids = torch.tensor([request["prompt_token_ids"]])
                if params.allowed_token_ids:  # one step, log-probabilities over the allowed tokens
                    allowed = params.allowed_token_ids
                    logprobs = hf.model(ids).logits[0, -1, allowed].log_softmax(-1)
                    step = {t: SimpleNamespace(logprob=float(lp)) for t, lp in zip(allowed, logprobs)}
                    answer = SimpleNamespace(
                        text="", token_ids=[allowed[int(logprobs.argmax())]], logprobs=[step]
                    )
                else:
                    tokens = hf.model.generate(ids, max_new_tokens=params.max_tokens, do_sample=False)
                    tokens = tokens[0, ids.shape[1] :].tolist()
                    eos = hf.tokenizer.eos_token_id
                    tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
                    answer = SimpleNamespace(
                        text=hf.tokenizer.decode(tokens), token_ids=tokens, logprobs=None
                    )
                out.append(SimpleNamespace(prompt_token_ids=request["prompt_token_ids"], outputs=[answer]))
            return out

    module = types.ModuleType("vllm")
    module.LLM = LLM
    module.SamplingParams = lambda **kw: SimpleNamespace(**{"allowed_token_ids": None, **kw})
    return module


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return HFBackend(model_id=str(write_tiny_llama(tmp_path_factory.mktemp("llama"))))


@pytest.fixture
def backend(hf, monkeypatch):
    from recbole_llm.llm.backends.vllm import VLLMBackend

    seen = {}
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm(hf, seen))
    backend = VLLMBackend(model_id=hf.model_id, engine_args={"gpu_memory_utilization": 0.5})
    return backend, seen


def test_engine_caches_prefixes_and_answers_like_the_hf_backend(hf, backend):
    vllm, seen = backend
    assert seen["engine"]["enable_prefix_caching"] and seen["engine"]["gpu_memory_utilization"] == 0.5
    assert vllm.identity()["gpu_memory_utilization"] == 0.5  # engine settings reach the cache key
    for want, got in zip(hf.generate(PROMPTS, 5), vllm.generate(PROMPTS, 5)):
        assert got == want


def test_label_logits_are_logits_up_to_one_constant_per_prompt(hf, backend):
    vllm, _ = backend
    labels = ["A", "B", "C"]
    for want, got in zip(hf.label_logits(PROMPTS, labels), vllm.label_logits(PROMPTS, labels)):
        shift = torch.tensor(want.logits) - torch.tensor(got.logits)
        assert torch.allclose(shift, shift[0].expand(3), atol=1e-4)
        assert got.prompt_tokens == want.prompt_tokens


def test_missing_vllm_says_how_to_install(monkeypatch):
    from recbole_llm.llm.backends.vllm import VLLMBackend

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(LLMError, match="pip install vllm"):
        VLLMBackend(model_id="any")


def test_factory_builds_it_from_config_and_asks_for_a_model(hf, backend):
    from recbole_llm.llm.factory import build_backend

    config = {"llm_backend": "vllm", "llm_path": None, "llm_dtype": "auto", "vllm_engine_args": None}
    with pytest.raises(RecBoleLLMError, match="needs llm_path"):
        build_backend({**config, "no_cache": True})
    built = build_backend({**config, "llm_path": hf.model_id, "no_cache": True})
    assert built.kind == "vllm" and built.identity()["dtype"] == "auto"
