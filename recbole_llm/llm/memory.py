"""User memory for LLM recommenders: what a prompt says about a user beyond the numbered history.

- Long-term: an LLM-written profile of the user's taste, from the history it is shown
  (`properties/prompts/profile.yaml`). LLMRanker shows it with `user_profile: True` ({profile});
  EmbeddingRetriever encodes it as the query of `query_mode: profile`. It is an LLM answer like any
  other, written by the run's backend behind the response cache: keyed on the backend, the template
  and the history, so each (user, history) is written once and a rerun asks nothing.
- Short-term: the last `short_term_items` items verbatim, shown as "Most recently: ..." ({recently}).

Both fields render to "" when off, and the built-in templates place them where "" leaves a prompt
byte-identical to one without memory (so earlier cached answers still match).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from recbole_llm.config_checks import optional, positive_int
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm.backend import Backend, Completion, Prompt
from recbole_llm.llm.prompts import PromptTemplate, format_history, load_task_template, quote_item


def write_texts(
    backend: Backend,
    prompts: list[Prompt],
    max_new_tokens: int,
    batch_size: int,
    show_progress: bool = False,
    desc: str = "writing",
) -> list[Completion]:
    """The LLM's answer to each prompt, made one line. Distinct prompts are asked `batch_size` at a
    time, so the response cache keeps each finished batch when a later one fails."""
    distinct = list(dict.fromkeys(prompts))
    answers: dict[Prompt, Completion] = {}
    with tqdm(total=len(distinct), desc=desc, unit="text", disable=not show_progress) as bar:
        for start in range(0, len(distinct), batch_size):
            batch = distinct[start : start + batch_size]
            for prompt, a in zip(batch, backend.generate(batch, max_new_tokens)):
                answers[prompt] = Completion(" ".join(a.text.split()), a.prompt_tokens, a.output_tokens)
            bar.update(len(batch))
    return [answers[p] for p in prompts]


@dataclass
class ProfileWriter:
    """Long-term memory: profiles of users from their histories (item texts, oldest first)."""

    backend: Backend
    domain: str
    max_new_tokens: int = 100
    batch_size: int = 8
    show_progress: bool = False
    template: PromptTemplate = field(default_factory=lambda: load_task_template("profile"))

    @classmethod
    def from_config(cls, backend: Backend, config) -> ProfileWriter:
        return cls(
            backend,
            config["domain"],
            int(config["profile_max_tokens"]),
            int(config["llm_batch_size"]),
            bool(config["show_progress"]),
        )

    def prompt(self, history: Sequence[str]) -> Prompt:
        return self.template.render(history=format_history(list(history)), domain=self.domain)

    def __call__(self, histories: Sequence[Sequence[str]]) -> list[Completion]:
        """One profile per history, all asked in batches (a user's repeated history is asked once)."""
        prompts = [self.prompt(h) for h in histories]
        return write_texts(
            self.backend, prompts, self.max_new_tokens, self.batch_size, self.show_progress, "profiles"
        )


def memory_fields(profile: str = "", recently: Sequence[str] = (), quote: bool = True) -> dict[str, str]:
    """The {profile} and {recently} fields of a ranking prompt: a line each, "" when there is none.
    Both go through `quote_item` (a profile is written from item text, so it is data too)."""

    def shown(text: str) -> str:
        return quote_item(text) if quote else text

    return {
        "profile": f"A summary of my taste: {shown(profile)}\n" if profile else "",
        "recently": f"Most recently: {', '.join(map(shown, recently))}\n" if recently else "",
    }


def check_memory_config(config) -> None:
    """Memory settings that would otherwise fail only after the data and the LLM are loaded."""
    if not isinstance(config["user_profile"], bool):
        raise RecBoleLLMError(f"user_profile must be True or False, not {config['user_profile']!r}.")
    if not optional(positive_int)(config["short_term_items"]):
        raise RecBoleLLMError(
            f"short_term_items must be a positive integer or null (off), not {config['short_term_items']!r}."
        )
    if not positive_int(config["profile_max_tokens"]):
        raise RecBoleLLMError(
            f"profile_max_tokens must be a positive integer, not {config['profile_max_tokens']!r}."
        )
