"""The response cache: reruns make no LLM calls, any change of model or request misses, runs resume."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from recbole_llm.llm.backend import Backend, Completion, LabelLogits, LLMError, Prompt
from recbole_llm.llm.cache import CachedBackend, with_cache

SECRET = "sk-test-SECRET-0123456789"
LABELS = ["Yes", "No"]


@dataclass
class CountingBackend(Backend):
    """Deterministic answers derived from the request; records each call; can die after k answers."""

    kind = "counting"
    api_key_env: str = "COUNTING_API_KEY"
    fail_after: int | None = None
    calls: list = field(default_factory=list)

    def generate(self, prompts, max_new_tokens, on_result=None):
        self.calls.append(("generate", [p.user for p in prompts]))
        out = []
        for i, prompt in enumerate(prompts):
            if self.fail_after is not None and i >= self.fail_after:
                raise LLMError("killed")
            key = os.environ.get(self.api_key_env, "")  # a real backend would send it to its server
            out.append(Completion(f"{self.model_id}|{prompt.user[::-1]}|{max_new_tokens}", len(key), 3))
            if on_result is not None:
                on_result(i, out[-1])
        return out

    def label_logits(self, prompts, labels):
        self.calls.append(("label_logits", [p.user for p in prompts]))
        return [LabelLogits(tuple(len(p.user) / (j + 3) for j in range(len(labels))), 5) for p in prompts]


def prompts(n=6):
    return [Prompt(f"user {i}", system="sys", answer_prefix="Answer:") for i in range(n)]


def test_rerun_with_same_settings_makes_no_calls(tmp_path):
    first = CachedBackend(CountingBackend("m", {"dtype": "float32"}), tmp_path)
    answers, logits = first.generate(prompts(), 8), first.label_logits(prompts(), LABELS)
    assert (first.hits, first.misses) == (0, 12)

    inner = CountingBackend("m", {"dtype": "float32"})
    again = CachedBackend(inner, tmp_path)  # a new process: same file, fresh connection
    assert again.generate(prompts(), 8) == answers
    assert again.label_logits(prompts(), LABELS) == logits
    assert isinstance(logits[0].logits, tuple)
    assert inner.calls == []
    assert (again.hits, again.misses) == (12, 0)


@pytest.mark.parametrize(
    "backend, prompt, max_new_tokens",
    [
        (CountingBackend("other-model", {"dtype": "float32"}), Prompt("user 0", "sys", "Answer:"), 8),
        (CountingBackend("m", {"dtype": "bfloat16"}), Prompt("user 0", "sys", "Answer:"), 8),
        (CountingBackend("m", {"dtype": "float32"}), Prompt("user 0!", "sys", "Answer:"), 8),
        (CountingBackend("m", {"dtype": "float32"}), Prompt("user 0", "other", "Answer:"), 8),
        (CountingBackend("m", {"dtype": "float32"}), Prompt("user 0", "sys", "Rating:"), 8),
        (CountingBackend("m", {"dtype": "float32"}), Prompt("user 0", "sys", "Answer:"), 9),
    ],
    ids=["model", "settings", "user", "system", "answer_prefix", "max_new_tokens"],
)
def test_any_change_misses(tmp_path, backend, prompt, max_new_tokens):
    CachedBackend(CountingBackend("m", {"dtype": "float32"}), tmp_path).generate(prompts(1), 8)
    cached = CachedBackend(backend, tmp_path)
    cached.generate([prompt], max_new_tokens)
    assert (cached.hits, cached.misses) == (0, 1)
    assert backend.calls == [("generate", [prompt.user])]


def test_labels_and_method_are_part_of_the_key(tmp_path):
    cached = CachedBackend(CountingBackend("m"), tmp_path)
    cached.label_logits(prompts(2), LABELS)
    cached.label_logits(prompts(2), ["No", "Yes"])
    cached.generate(prompts(2), 8)
    assert (cached.hits, cached.misses) == (0, 6)


def test_only_misses_reach_the_inner_backend_in_one_call_in_order(tmp_path):
    inner = CountingBackend("m")
    cached = CachedBackend(inner, tmp_path)
    cached.generate(prompts()[::2], 8)
    inner.calls.clear()
    reported = {}
    answers = cached.generate(prompts() + prompts()[:1], 8, on_result=reported.__setitem__)
    assert inner.calls == [("generate", ["user 1", "user 3", "user 5"])]
    assert answers == CountingBackend("m").generate(prompts() + prompts()[:1], 8)
    assert reported == dict(enumerate(answers))
    assert (cached.hits, cached.misses) == (4, 6)  # hits: 3 cached + 1 repeat within the batch


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    dying = CachedBackend(CountingBackend("m", fail_after=4), tmp_path)
    with pytest.raises(LLMError, match="killed"):
        dying.generate(prompts(10), 8)  # the connection is never closed, as when a process is killed

    inner = CountingBackend("m")
    resumed = CachedBackend(inner, tmp_path).generate(prompts(10), 8)
    assert inner.calls == [("generate", [f"user {i}" for i in range(4, 10)])]
    assert resumed == CountingBackend("m").generate(prompts(10), 8)


def test_cache_holds_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("COUNTING_API_KEY", SECRET)
    cached = with_cache(CountingBackend("m"), str(tmp_path / "cache"))
    assert cached.generate(prompts(), 8)[0].prompt_tokens == len(SECRET)  # the key was used
    cached.label_logits(prompts(), LABELS)
    files = list((tmp_path / "cache").iterdir())
    assert any(f.name == "responses.sqlite" for f in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes()
    assert SECRET not in repr(cached)


def test_with_cache_is_transparent(tmp_path):
    backend = CountingBackend("m", {"dtype": "float32"})
    assert with_cache(backend, None) is backend
    cached = with_cache(backend, tmp_path)
    assert isinstance(cached, CachedBackend)
    assert (cached.kind, cached.model_id, cached.settings) == ("counting", "m", {"dtype": "float32"})
    assert cached.identity() == backend.identity()
    assert cached.calls is backend.calls  # backend-specific attributes pass through
