"""The response cache: a wrapper that answers prompts it has seen from disk (like lm-evaluation-harness's
CachingLM), keyed on the model's identity too so that two models never share answers.

Each answer is committed as soon as it is known, so an interrupted evaluation resumes where it stopped
and a rerun with the same settings makes no LLM calls. Keys are hashes and values are answers: no API
key can land in the file (identity() never holds one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from recbole_llm.llm.backend import Backend, Completion, LabelLogits, Prompt

FILENAME = "responses.sqlite"
_LOOKUP_CHUNK = 500  # below SQLite's limit on query parameters


class CachedBackend(Backend):
    """`inner` behind `<cache_dir>/responses.sqlite`; `hits` and `misses` count prompts answered
    from disk and prompts sent to `inner`."""

    def __init__(self, inner: Backend, cache_dir: str | Path):
        self.inner = inner
        self.path = Path(cache_dir) / FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0
        self._lock = threading.Lock()  # backends may report answers from worker threads
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL commits survive a killed process
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    @property
    def kind(self) -> str:
        return self.inner.kind

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def settings(self) -> dict:
        return self.inner.settings

    def identity(self) -> dict:
        return self.inner.identity()

    def __getattr__(self, name: str):
        # Backend-specific attributes (stats, n_parameters) stay reachable through the wrapper.
        if name == "inner":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"CachedBackend({self.inner!r}, {str(self.path)!r})"

    def generate(
        self,
        prompts: list[Prompt],
        max_new_tokens: int,
        on_result: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        return self._answer(
            "generate",
            prompts,
            {"max_new_tokens": max_new_tokens},
            Completion,
            lambda missing, save: self.inner.generate(missing, max_new_tokens, on_result=save),
            on_result,
        )

    def label_logits(self, prompts: list[Prompt], labels: list[str]) -> list[LabelLogits]:
        return self._answer(
            "label_logits",
            prompts,
            {"labels": list(labels)},
            LabelLogits,
            lambda missing, save: self.inner.label_logits(missing, labels),
        )

    def _answer(
        self,
        method: str,
        prompts: list[Prompt],
        params: dict,
        cls: type,
        ask: Callable[[list[Prompt], Callable], list],
        on_result: Callable | None = None,
    ) -> list:
        """Answers from disk, and from one `ask(missing_prompts, save)` call for the distinct misses."""
        model = self.inner.identity()
        keys = [_key(model, method, prompt, params) for prompt in prompts]
        positions: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            positions.setdefault(key, []).append(i)
        known = self._load(list(positions), cls)
        missing = [key for key in positions if key not in known]
        self.hits += len(prompts) - len(missing)
        self.misses += len(missing)

        def report(key: str) -> None:
            if on_result is not None:
                for i in positions[key]:
                    on_result(i, known[key])

        def save(j: int, value) -> None:
            key = missing[j]
            with self._lock:
                if key in known:  # reported twice: by the callback and in the returned list
                    return
                known[key] = value
                self._db.execute(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?)",
                    (key, json.dumps(dataclasses.asdict(value))),
                )
                self._db.commit()
            report(key)

        for key in list(known):
            report(key)
        if missing:
            answers = ask([prompts[positions[key][0]] for key in missing], save)
            for j, value in enumerate(answers):
                save(j, value)
        return [known[key] for key in keys]

    def _load(self, keys: list[str], cls: type) -> dict:
        found = {}
        with self._lock:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start : start + _LOOKUP_CHUNK]
                rows = self._db.execute(
                    f"SELECT key, value FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk
                )
                for key, value in rows:
                    fields = json.loads(value)
                    found[key] = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        return found


def _key(model: dict, method: str, prompt: Prompt, params: dict) -> str:
    """sha256 of a canonical JSON of everything that decides the answer."""
    payload = {"model": model, "method": method, "prompt": dataclasses.asdict(prompt), "params": params}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def with_cache(backend: Backend, cache_dir: str | Path | None) -> Backend:
    """`backend` behind the response cache in `cache_dir`, or as is when caching is off (--no_cache)."""
    return backend if cache_dir is None else CachedBackend(backend, cache_dir)
