"""Item augmentation: an LLM-written one-line description appended to each item whose text is thin.

A bare title or product code gives a ranker and an encoder little to go on; with `augment_items: True`
every item text of fewer than `augment_min_words` words gets "<text>: <description>"
(`properties/prompts/augment.yaml`). LLMRanker's prompts and EmbeddingRetriever's item vectors (and its
history-text queries) use the augmented texts, written by one function through the run's LLM backend
(the retriever's `llm_*` settings; SmolLM2 from its wheel by default) behind the response cache: each
distinct text is described once, and a rerun asks nothing.
"""

from __future__ import annotations

from recbole_llm.config_checks import positive_int
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm.backend import Backend
from recbole_llm.llm.memory import write_texts
from recbole_llm.llm.prompts import PromptTemplate, load_task_template, quote_item


def is_thin(text: str, min_words: int) -> bool:
    """A text to augment: fewer than `min_words` words ("" is the padding item, never described)."""
    return bool(text) and len(text.split()) < min_words


def augment_texts(
    texts: list[str],
    backend: Backend,
    domain: str,
    min_words: int,
    max_new_tokens: int = 40,
    batch_size: int = 8,
    show_progress: bool = False,
    template: PromptTemplate | None = None,
) -> list[str]:
    """`texts` with a description appended to each thin one; the others are returned unchanged."""
    template = template or load_task_template("augment")
    thin = [i for i, text in enumerate(texts) if is_thin(text, min_words)]
    prompts = [template.render(item=quote_item(texts[i]), domain=domain) for i in thin]
    answers = write_texts(backend, prompts, max_new_tokens, batch_size, show_progress, "describing items")
    augmented = list(texts)
    for i, answer in zip(thin, answers):
        if answer.text:
            augmented[i] = f"{texts[i]}: {answer.text}"
    return augmented


def augment_from_config(texts: list[str], backend: Backend | None, config) -> list[str]:
    """The item texts a model uses: augmented when `augment_items` is on (`backend` then required)."""
    if not config["augment_items"]:
        return texts
    return augment_texts(
        texts,
        backend,
        config["domain"],
        int(config["augment_min_words"]),
        int(config["augment_max_tokens"]),
        int(config["llm_batch_size"]),
        bool(config["show_progress"]),
    )


def check_augment_config(config) -> None:
    """Augmentation settings that would otherwise fail only after the data and the LLM are loaded."""
    if not isinstance(config["augment_items"], bool):
        raise RecBoleLLMError(f"augment_items must be True or False, not {config['augment_items']!r}.")
    for key in ("augment_min_words", "augment_max_tokens"):
        if not positive_int(config[key]):
            raise RecBoleLLMError(f"{key} must be a positive integer, not {config[key]!r}.")
