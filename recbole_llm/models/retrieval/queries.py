"""User queries: how a user's history becomes one vector in the items' space (`query_mode`).

A mode is called with the batch's history sequences (left-aligned, RecBole's `item_id_list`), their
lengths and the unit item vectors, and returns unit query vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recbole_llm.errors import RecBoleLLMError, did_you_mean
from recbole_llm.llm.backend import Completion


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return F.normalize(vectors, dim=-1)


def last_items(sequences: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `k` items of each sequence, most recent first ([B, k]), and which of them exist."""
    position = lengths.unsqueeze(1) - 1 - torch.arange(k, device=sequences.device).unsqueeze(0)
    exists = position >= 0
    return sequences.gather(1, position.clamp(min=0)) * exists, exists


@dataclass
class RecentMean:
    """Mean of the last `k` item vectors, the item `a` steps back weighted `decay**a`.

    A weighted bag of the item vectors (`embedding_bag`), so no [users, k, d] tensor is built.
    """

    k: int
    decay: float

    def __call__(self, sequences, lengths, item_vectors: torch.Tensor) -> torch.Tensor:
        items, exists = last_items(sequences, lengths, self.k)
        ages = torch.arange(self.k, device=items.device, dtype=item_vectors.dtype)
        weights = self.decay**ages * exists
        mean = F.embedding_bag(items, item_vectors, per_sample_weights=weights, mode="sum")
        return _unit(mean)


@dataclass
class HistoryText:
    """The texts of the last `k` items, most recent first (an encoder that truncates long input drops
    the oldest), joined by "; " and encoded as a query."""

    k: int
    texts: list[str]
    encode: Callable[[list[str]], np.ndarray]

    def __call__(self, sequences, lengths, item_vectors: torch.Tensor) -> torch.Tensor:
        vectors = self.encode(history_texts(sequences, lengths, self.k, self.texts))
        return _unit(torch.from_numpy(vectors).to(item_vectors))


def history_texts(sequences: torch.Tensor, lengths: torch.Tensor, k: int, texts: list[str]) -> list[str]:
    """Each history as `HistoryText` renders it (shared with fine-tuning, which trains on these texts)."""
    items, exists = last_items(sequences, lengths, k)
    rows = [[texts[i] for i, ok in zip(r, e) if ok] for r, e in zip(items.tolist(), exists.tolist())]
    return ["; ".join(row) for row in rows]


@dataclass
class Profile:
    """The LLM-written profile (recbole_llm/llm/memory.py) of the last `k` items, oldest first, encoded
    as a query: the text, and the cached answer, that LLMRanker shows with `user_profile: True`."""

    k: int
    texts: list[str]
    write: Callable[[list[tuple[str, ...]]], list[Completion]]
    encode: Callable[[list[str]], np.ndarray]

    def __call__(self, sequences, lengths, item_vectors: torch.Tensor) -> torch.Tensor:
        items, exists = last_items(sequences, lengths, self.k)
        histories = [
            tuple(self.texts[i] for i, ok in zip(r[::-1], e[::-1]) if ok)
            for r, e in zip(items.tolist(), exists.tolist())
        ]
        vectors = self.encode([answer.text for answer in self.write(histories)])
        return _unit(torch.from_numpy(vectors).to(item_vectors))


QUERY_MODES = ("recent_mean", "history_text", "profile")


def check_query_config(config) -> None:
    mode = config["query_mode"]
    if mode not in QUERY_MODES:
        raise RecBoleLLMError(
            f"Unknown query_mode {mode!r}; choose from {', '.join(QUERY_MODES)}."
            + did_you_mean(str(mode), QUERY_MODES)
        )
    decay = config["query_decay"]
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise RecBoleLLMError(f"query_decay must be in (0, 1] (1: a plain mean), not {decay!r}.")


def make_query(
    config,
    texts: list[str],
    encode: Callable[[list[str]], np.ndarray],
    profiles: Callable[[list[tuple[str, ...]]], list[Completion]] | None = None,
):
    """The configured query mode; `encode` embeds query texts (through the embedding cache), `profiles`
    writes users' profiles (query_mode: profile)."""
    k = int(config["max_his_len"])
    if config["query_mode"] == "recent_mean":
        return RecentMean(k, float(config["query_decay"]))
    if config["query_mode"] == "profile":
        return Profile(k, texts, profiles, encode)
    return HistoryText(k, texts, encode)
