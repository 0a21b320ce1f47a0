"""Candidate sets: which items each evaluated user's model must rank, generated once and reused.

A set is stored as tokens (not RecBole's internal ids) in the common one-line-per-user format
`user_token<TAB>item_token item_token ...`, next to a JSON file with the parameters that made it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recbole_llm.errors import RecBoleLLMError

PROTOCOL_TYPES = ("full", "uniform", "popularity", "retriever", "file")
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ProtocolSpec:
    """What to rank at test time; one spec is shared by every model of a leaderboard."""

    type: str = "full"
    size: int | None = None
    include_ground_truth: bool = True  # retriever only: put the ground truth in when it is missed
    model: str | None = None  # retriever only: the model whose top-`size` items are the candidates
    retriever_config: dict = field(default_factory=dict, hash=False)
    path: str | None = None  # file only

    @classmethod
    def parse(cls, block) -> ProtocolSpec:
        """Validate a `candidates` config block (a dict, or just its type as a string)."""
        block = {"type": block} if isinstance(block, str) else dict(block or {})
        unknown = set(block) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise RecBoleLLMError(
                f"Unknown key(s) {sorted(unknown)} in `candidates`; known: "
                f"{sorted(cls.__dataclass_fields__)}."
            )
        spec = cls(**block)
        if spec.type not in PROTOCOL_TYPES:
            raise RecBoleLLMError(
                f"candidates.type must be one of {', '.join(PROTOCOL_TYPES)}, not {spec.type!r}."
            )
        sized = spec.type in ("uniform", "popularity", "retriever")
        if sized and (not isinstance(spec.size, int) or spec.size < 2):
            raise RecBoleLLMError(f"candidates.size must be an integer >= 2 for type {spec.type}.")
        if spec.type == "retriever" and not spec.model:
            raise RecBoleLLMError("candidates.model must name the retriever model (e.g. Pop).")
        if spec.type == "file" and not spec.path:
            raise RecBoleLLMError("candidates.path must point to a candidate file.")
        return spec

    @property
    def label(self) -> str:
        """Short name used in tables and file names, e.g. 'uniform20' or 'retriever-Pop20'."""
        if self.type == "full":
            return "full"
        if self.type == "file":
            return "file-" + Path(self.path).stem
        if self.type == "retriever":
            return f"retriever-{self.model}{self.size}" + ("" if self.include_ground_truth else "-nogt")
        return f"{self.type}{self.size}"


@dataclass
class CandidateSet:
    """Evaluated users and, unless ranking is over all items, each user's candidate items."""

    users: list[str]
    items: list[list[str]] | None

    def write(self, path: Path, meta: dict) -> None:
        """Write atomically, so that an interrupted run never leaves a half-written set behind."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        rows = self.items if self.items is not None else [[] for _ in self.users]
        tmp.write_text("".join(f"{u}\t{' '.join(r)}\n" for u, r in zip(self.users, rows)))
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str | Path, full: bool = False) -> CandidateSet:
        users, items = [], []
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            user, sep, rest = line.partition("\t")
            if not sep:
                raise RecBoleLLMError(f"{path}:{n}: expected 'user<TAB>item item ...'.")
            users.append(user)
            items.append(rest.split())
        return cls(users, None if full else items)


def split_fingerprint(dataset, n_interactions: int, test_pairs: tuple[np.ndarray, np.ndarray]) -> str:
    """Hash of the test interactions (as tokens) and the data size.

    Only facts that general and sequential views of the same data share go in, so both kinds of
    model get the same candidate set.
    """
    users = dataset.id2token(dataset.uid_field, test_pairs[0])
    items = dataset.id2token(dataset.iid_field, test_pairs[1])
    lines = sorted(f"{u}\t{i}" for u, i in zip(users, items))
    h = hashlib.sha1(f"{dataset.dataset_name}|{dataset.item_num}|{n_interactions}".encode())
    h.update("\n".join(lines).encode())
    return h.hexdigest()


def select_users(dataset, test_users: np.ndarray, eval_users: int | None, seed: int) -> np.ndarray:
    """Test users (a seeded subset if `eval_users`) in token order.

    Drawing and ordering over tokens keeps the subset and the negatives drawn per user independent
    of RecBole's id mapping, which may differ between dataset classes.
    """
    users = np.unique(test_users)
    users = users[np.argsort(dataset.id2token(dataset.uid_field, users), kind="stable")]
    if eval_users is None or eval_users >= len(users):
        return users
    chosen = np.random.default_rng(seed).choice(len(users), size=eval_users, replace=False)
    return users[np.sort(chosen)]


def sample_candidates(
    users: np.ndarray,
    positives: dict[int, np.ndarray],
    seen: sp.csr_matrix,
    size: int,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Each user's positives plus negatives from items the user never interacted with, shuffled.

    `weights` (per item) turns uniform sampling into popularity sampling. Item 0 is padding.
    """
    n_items = seen.shape[1]
    rows = np.empty((len(users), size), dtype=np.int64)
    for r, u in enumerate(users):
        pos = positives[u]
        allowed = np.ones(n_items, dtype=bool)
        allowed[0] = False
        allowed[seen.indices[seen.indptr[u] : seen.indptr[u + 1]]] = False
        pool = np.flatnonzero(allowed)
        k = size - len(pos)
        if k < 1 or len(pool) < k:
            raise RecBoleLLMError(
                f"Cannot draw {k} negatives for a user with {len(pos)} positives and "
                f"{len(pool)} unseen items; choose a smaller candidates.size."
            )
        p = None if weights is None else weights[pool] / weights[pool].sum()
        negatives = rng.choice(pool, size=k, replace=False, p=p)
        rows[r] = rng.permutation(np.concatenate([pos, negatives]))
    return rows


def top_n(
    scores: np.ndarray,
    history: sp.csr_matrix,
    users: np.ndarray,
    positives: dict[int, np.ndarray],
    size: int,
    include_ground_truth: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """A retriever's top-`size` unseen items per user (scores: users x items), shuffled.

    With `include_ground_truth`, missed positives replace the lowest-ranked retrieved items, as a
    two-stage system evaluated on its ranker would.
    """
    scores = scores.astype(np.float64, copy=True)
    scores[:, 0] = -np.inf
    seen = history[users].tocoo()
    scores[seen.row, seen.col] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :size]
    if include_ground_truth:
        for r, u in enumerate(users):
            missing = np.setdiff1d(positives[u], top[r])
            if len(missing):
                keep = top[r][~np.isin(top[r], positives[u])][: size - len(positives[u])]
                top[r] = np.concatenate([keep, positives[u]])
    return rng.permuted(top, axis=1)


def store_path(candidates_dir: str, dataset_name: str, spec: ProtocolSpec, key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return Path(candidates_dir) / dataset_name / f"{spec.label}-{digest[:12]}.tsv"


def load_or_create(path: Path, key: dict, create: Callable[[], CandidateSet], full: bool) -> CandidateSet:
    """Reuse the stored set made with the same parameters, or create and store it."""
    if path.is_file():
        return CandidateSet.read(path, full=full)
    candidates = create()
    candidates.write(path, {"format_version": _FORMAT_VERSION, **key})
    return candidates
