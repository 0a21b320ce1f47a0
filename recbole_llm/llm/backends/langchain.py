"""Any LangChain chat model the user builds (ChatOpenAI, ChatAnthropic, ChatOllama...), as a Backend."""

from __future__ import annotations

from collections.abc import Callable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from recbole_llm.benchmark.records import jsonable
from recbole_llm.llm.backend import Backend, Completion, LLMError, Prompt


class LangChainBackend(Backend):
    """`chat_model` behind the Backend interface.

    Decoding options (temperature 0, a token limit) belong to the chat model: chat models have no
    common keyword for them, so set them when building it; `max_new_tokens` is not passed on. The
    model's identifying params go into `settings`, so changing them changes the cache keys.
    """

    kind = "langchain"

    def __init__(
        self,
        chat_model: BaseChatModel,
        model_id: str | None = None,
        settings: dict | None = None,
        max_concurrency: int = 4,
    ):
        name = getattr(chat_model, "model", None) or getattr(chat_model, "model_name", None)
        default_id = type(chat_model).__name__ + (f":{name}" if isinstance(name, str) else "")
        # Secret fields are the ones LangChain declares (lc_secrets); SecretStr values print masked anyway.
        params = jsonable(dict(getattr(chat_model, "_identifying_params", {})))
        params = {k: v for k, v in params.items() if k not in getattr(chat_model, "lc_secrets", {})}
        super().__init__(model_id or default_id, {"params": params, **(settings or {})})
        self.chat_model = chat_model
        self.max_concurrency = max_concurrency

    def generate(
        self,
        prompts: list[Prompt],
        max_new_tokens: int,
        on_result: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        inputs = [_messages(prompt) for prompt in prompts]
        results: list[Completion | None] = [None] * len(prompts)
        failure: BaseException | None = None
        answers = self.chat_model.batch_as_completed(
            inputs, config={"max_concurrency": self.max_concurrency}, return_exceptions=True
        )
        for i, message in answers:
            if isinstance(message, Exception):
                failure = failure or message
                continue
            usage = getattr(message, "usage_metadata", None) or {}
            results[i] = Completion(
                _text(message.content), usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
            )
            if on_result is not None:
                on_result(i, results[i])
        if failure is not None:
            raise LLMError(f"{self.model_id} failed: {type(failure).__name__}: {failure}") from failure
        return results


def _messages(prompt: Prompt) -> list:
    return ([SystemMessage(prompt.system)] if prompt.system else []) + [HumanMessage(prompt.chat_user_text())]


def _text(content) -> str:
    """Text of a message whose content is a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    blocks = (b if isinstance(b, str) else b.get("text", "") for b in content if isinstance(b, str | dict))
    return "".join(map(str, blocks))
