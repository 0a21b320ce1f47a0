"""The narrow interface every LLM backend implements, and the request/result records it trades in.

Rankers only ever call `generate` (text answers, for list-wise and pair-wise ranking) and
`label_logits` (the next-token logit of each label after a prompt, for the verbalizer and point-wise
modes). Everything a backend needs to know about chat formats stays inside the backend.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from recbole_llm.errors import RecBoleLLMError


class LLMError(RecBoleLLMError):
    """A backend could not answer (unreachable server, bad credentials, unsupported request)."""


class UnsupportedRequest(LLMError):
    """The backend cannot serve this kind of request (e.g. logits from a chat API)."""


@dataclass(frozen=True)
class Prompt:
    """One request: a user message, an optional system message, and the text the answer starts with.

    `answer_prefix` is placed at the start of the model's turn (e.g. "Answer:"), so that the next
    token is the one the verbalizer reads; generation continues after it.
    """

    user: str
    system: str | None = None
    answer_prefix: str = ""

    def chat_user_text(self) -> str:
        """The user message for chat APIs, which cannot start the model's turn: the answer prefix
        becomes its last line."""
        return f"{self.user}\n{self.answer_prefix}" if self.answer_prefix else self.user


@dataclass(frozen=True)
class Completion:
    """A generated answer (greedy decoding) with its token counts."""

    text: str
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LabelLogits:
    """Next-token logits of each asked label (in the order asked), after one prompt."""

    logits: tuple[float, ...]
    prompt_tokens: int


@dataclass
class Backend(abc.ABC):
    """A language model. Subclasses set `kind` and implement `generate` (and `label_logits` if they
    can read logits). `settings` holds everything besides the model id that changes answers
    (dtype, decoding options); it goes into every cache key."""

    kind: ClassVar[str]
    model_id: str
    settings: dict = field(default_factory=dict)

    def identity(self) -> dict:
        """What makes two backends give the same answers: the cache key's model part."""
        return {"backend": self.kind, "model": self.model_id, **self.settings}

    @abc.abstractmethod
    def generate(
        self,
        prompts: list[Prompt],
        max_new_tokens: int,
        on_result: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        """Greedy answers, one per prompt, in order.

        `on_result(i, completion)` is called as soon as the answer to `prompts[i]` is known (in any
        order), so that the response cache keeps finished answers when a later prompt fails.
        """

    def label_logits(self, prompts: list[Prompt], labels: list[str]) -> list[LabelLogits]:
        """Logit of each label's first token as the next token after each prompt's answer prefix."""
        raise UnsupportedRequest(
            f"The {self.kind} backend cannot read next-token logits; "
            "use ranking_mode=listwise or pairwise, or the hf/vllm backend."
        )
