"""The embedding cache: one vector per (encoder identity, role, text) in `<cache_dir>/embeddings.sqlite`.

Keyed per text rather than per catalogue, so that a rerun encodes nothing (items, and the history
texts of `history_text` queries), a catalogue that gains items encodes only the new ones, and an
interrupted encoding resumes: each batch is committed as soon as it is encoded. The item template
is part of the key through the text it renders: two templates that render the same text share it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recbole_llm.models.retrieval.encoders import Encoder

FILENAME = "embeddings.sqlite"
_LOOKUP_CHUNK = 500  # below SQLite's limit on query parameters


class EmbeddingCache:
    """Vectors of texts, read from `cache_dir` or encoded and stored there (`cache_dir` None: no
    cache). `hits` and `misses` count distinct texts read from disk and texts sent to the encoder."""

    def __init__(self, cache_dir: str | Path | None):
        self.hits = self.misses = 0
        self._db = None
        if cache_dir is not None:
            path = Path(cache_dir) / FILENAME
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB)")
            self._db.commit()

    def encode(
        self, encoder: Encoder, texts: list[str], query: bool, batch_size: int, show_progress: bool = False
    ) -> np.ndarray:
        """[len(texts), d] float32 vectors; each distinct text missing from the cache is encoded once."""
        role = "\0query\0" if query else "\0document\0"
        prefix = json.dumps(encoder.identity, sort_keys=True, default=str) + role
        keys = [hashlib.sha256((prefix + text).encode()).hexdigest() for text in texts]
        text_of = dict(zip(keys, texts))
        known = self._load(list(text_of))
        # Similar lengths in one batch pad less (as sentence-transformers sorts within one call).
        missing = sorted((k for k in text_of if k not in known), key=lambda k: len(text_of[k]))
        self.hits += len(text_of) - len(missing)
        self.misses += len(missing)
        with tqdm(
            total=len(missing), desc="encoding", unit="text", disable=not (show_progress and missing)
        ) as bar:
            for start in range(0, len(missing), batch_size):
                batch = missing[start : start + batch_size]
                vectors = np.asarray(encoder.encode([text_of[k] for k in batch], query), dtype=np.float32)
                known.update(zip(batch, vectors))
                self._store(batch, vectors)
                bar.update(len(batch))
        return np.stack([known[k] for k in keys])

    def _load(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        if self._db is None:
            return found
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            rows = self._db.execute(
                f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update((key, np.frombuffer(blob, dtype=np.float32)) for key, blob in rows)
        return found

    def _store(self, keys: list[str], vectors: np.ndarray) -> None:
        if self._db is None:
            return
        rows = [(key, vector.tobytes()) for key, vector in zip(keys, vectors)]
        self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
        self._db.commit()
