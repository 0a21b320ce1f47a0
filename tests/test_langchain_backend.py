"""The langchain backend with langchain_core's fake chat models."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import (  # noqa: E402
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage, SystemMessage  # noqa: E402

from recbole_llm.llm.backend import Completion, LLMError, Prompt  # noqa: E402
from recbole_llm.llm.backends.langchain import LangChainBackend  # noqa: E402
from recbole_llm.llm.cache import CachedBackend  # noqa: E402


class NamedParrot(ParrotFakeChatModel):
    """Answers with the last message; fails on "bad"; sees the system message; has a model name."""

    model: str = "parrot-1"
    seen: list = []

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(messages)
        if "bad" in messages[-1].content:
            raise ValueError("the provider refused")
        return super()._generate(messages, stop, run_manager, **kwargs)


def test_answers_in_order_with_the_prefix_ending_the_user_message():
    chat = NamedParrot(seen=[])
    llm = LangChainBackend(chat)
    assert (llm.kind, llm.model_id) == ("langchain", "NamedParrot:parrot-1")
    reported = {}
    prompts = [Prompt(f"item {i}", system="sys", answer_prefix="Answer:") for i in range(6)]
    answers = llm.generate(prompts, 16, on_result=reported.__setitem__)
    assert answers == [Completion(f"item {i}\nAnswer:", 0, 0) for i in range(6)]
    assert reported == dict(enumerate(answers))
    assert all(m[0] == SystemMessage("sys") and len(m) == 2 for m in chat.seen)
    with pytest.raises(LLMError, match="cannot read next-token logits"):
        llm.label_logits(prompts, ["Yes", "No"])


def test_token_usage_and_identity():
    message = AIMessage("yes", usage_metadata={"input_tokens": 7, "output_tokens": 1, "total_tokens": 8})
    llm = LangChainBackend(GenericFakeChatModel(messages=iter([message])), settings={"temperature": 0})
    assert llm.generate([Prompt("rate it")], 4) == [Completion("yes", 7, 1)]
    assert llm.identity() == {
        "backend": "langchain",
        "model": "GenericFakeChatModel",
        "params": {},
        "temperature": 0,
    }


def test_finished_answers_reach_the_cache_when_one_fails(tmp_path):
    prompts = [Prompt("ok 0"), Prompt("bad"), Prompt("ok 2")]
    with pytest.raises(LLMError, match="the provider refused"):
        CachedBackend(LangChainBackend(NamedParrot(seen=[])), tmp_path).generate(prompts, 8)
    chat = NamedParrot(seen=[])
    cached = CachedBackend(LangChainBackend(chat), tmp_path)
    with pytest.raises(LLMError):
        cached.generate(prompts, 8)
    assert [m[-1].content for m in chat.seen] == ["bad"]
    assert (cached.hits, cached.misses) == (2, 1)
