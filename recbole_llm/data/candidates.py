"""Candidate sets: which items each evaluated user's model must rank, generated once and reused.

A set is stored as tokens (not RecBole's internal ids) in the common one-line-per-user format
`user_token<TAB>item_token item_token ...`, next to a JSON file with the parameters that made it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recbole_llm.atomic import write_atomic
from recbole_llm.errors import RecBoleLLMError

_FORMAT_VERSION = 2


@dataclass
class CandidateSet:
    """Evaluated users and, unless ranking is over all items, each user's candidate items."""

    users: list[str]
    items: list[list[str]] | None

    def write(self, path: Path, meta: dict) -> None:
        """Write atomically, so that an interrupted run never leaves a half-written set behind."""
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.items if self.items is not None else [[] for _ in self.users]
        write_atomic(path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True))
        write_atomic(path, "".join(f"{u}\t{' '.join(r)}\n" for u, r in zip(self.users, rows)))

    @classmethod
    def read(cls, path: str | Path, full: bool = False) -> CandidateSet:
        """Read a set; a malformed line, a repeated user or lists of unequal length fail in one line."""
        users, items = [], []
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            user, sep, rest = line.partition("\t")
            if not sep:
                raise RecBoleLLMError(f"{path}:{n}: expected 'user<TAB>item item ...'.")
            users.append(user)
            items.append(rest.split())
        if len(set(users)) != len(users):
            raise RecBoleLLMError(f"{path}: a user is listed twice; give each user one line.")
        if not full and len({len(r) for r in items}) > 1:
            raise RecBoleLLMError(
                f"{path}: every user must have the same number of candidates (found "
                f"{sorted({len(r) for r in items})}); pad or trim the lists."
            )
        return cls(users, None if full else items)

    def digest(self) -> str:
        """Content hash of the users and their lists (in order), independent of where they are stored."""
        rows = self.items if self.items is not None else [[] for _ in self.users]
        text = "".join(f"{u}\t{' '.join(r)}\n" for u, r in zip(self.users, rows))
        return hashlib.sha256(text.encode()).hexdigest()

    def subset(self, users: list[str]) -> CandidateSet:
        """The lists of `users` (which must all be in the set), in the given order."""
        if self.items is None:
            return CandidateSet(list(users), None)
        row = {u: r for u, r in zip(self.users, self.items)}
        return CandidateSet(list(users), [row[u] for u in users])


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


def select_users(pool: list[str], eval_users: int | None, seed: int) -> list[str]:
    """A seeded subset of `eval_users` user tokens of `pool` (all if None), in token order.

    The subset is the head of one seeded permutation of the sorted pool, so smaller samples are
    subsets of larger ones (50 users of a seed are among its 200), and it depends on tokens only,
    never on RecBole's id mapping. Asking for more users than the pool holds is an error, not a
    silently smaller evaluation.
    """
    pool = sorted(pool)
    if eval_users is None:
        return pool
    if eval_users > len(pool):
        raise RecBoleLLMError(
            f"eval_users={eval_users}, but only {len(pool)} users can be evaluated under this protocol; "
            "lower eval_users or set it to null (all users)."
        )
    chosen = np.random.default_rng([seed, 1]).permutation(len(pool))[:eval_users]
    return [pool[i] for i in np.sort(chosen)]


def token_order(dataset, field: str) -> np.ndarray:
    """Internal ids of `field` sorted by token, padding (id 0) first.

    Negatives are drawn in this order, so the same data gives the same lists whatever id mapping
    RecBole built (it depends on row order and on the dataset class).
    """
    tokens = np.asarray(dataset.field2id_token[field][1:], dtype=str)
    return np.concatenate([[0], 1 + np.argsort(tokens, kind="stable")]).astype(np.int64)


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


def store_path(candidates_dir: str, dataset_name: str, name: str, key: dict) -> Path:
    """`<dir>/<dataset>/<name>-<hash of key>.tsv`: one file per set of lists."""
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return Path(candidates_dir) / dataset_name / f"{name}-{digest[:12]}.tsv"


def load_or_create(path: Path, key: dict, create: Callable[[], CandidateSet], full: bool) -> CandidateSet:
    """Reuse the stored set made with the same parameters, or create and store it."""
    if path.is_file():
        return CandidateSet.read(path, full=full)
    candidates = create()
    candidates.write(path, {"format_version": _FORMAT_VERSION, **key})
    return candidates
