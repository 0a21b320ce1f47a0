"""Bind a protocol spec to a split: the evaluated users, their candidates, and what is masked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from recbole_llm.data.candidates import (
    CandidateSet,
    ProtocolSpec,
    load_or_create,
    sample_candidates,
    select_users,
    split_fingerprint,
    store_path,
)
from recbole_llm.data.split import Split, subset_loader
from recbole_llm.errors import RecBoleLLMError

# retrieve(spec, user_tokens) -> candidate item tokens per user
Retrieve = Callable[[ProtocolSpec, list[str]], list[list[str]]]


@dataclass
class EvalProtocol:
    """What the trainer needs to score one phase: candidates per user, or history to mask."""

    label: str
    n_users: int  # evaluated users
    candidates: torch.Tensor | None  # n_users x N internal item ids; None ranks all items
    history: sp.csr_matrix | None  # items ranked last in full ranking (mask_history)

    def candidates_for(self, users: torch.Tensor) -> torch.Tensor:
        return self.candidates[users.cpu()].to(users.device)

    def mask_history(self, scores: torch.Tensor, users: torch.Tensor) -> None:
        """Set the scores of each user's already-seen items to -inf, in place."""
        if self.history is None:
            return
        seen = self.history[users.cpu().numpy()].tocoo()
        scores[torch.from_numpy(seen.row).long(), torch.from_numpy(seen.col).long()] = -np.inf


def group_by_user(users: np.ndarray, items: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    return {int(g[0]): i for g, i in zip(np.split(users, bounds), np.split(items, bounds))}


def _to_ids(dataset, field: str, tokens) -> np.ndarray:
    try:
        return np.asarray(dataset.token2id(field, tokens), dtype=np.int64)
    except ValueError as err:
        raise RecBoleLLMError(f"Candidate list names a {field} unknown to the dataset: {err}") from err


def _candidate_set(config, split: Split, spec: ProtocolSpec, retrieve: Retrieve | None) -> CandidateSet:
    ds = split.dataset
    users = select_users(ds, split.test_pairs[0], config["eval_users"], config["seed"])
    user_tokens = list(ds.id2token(ds.uid_field, users))
    if spec.type == "file":
        listed = CandidateSet.read(spec.path)
        wanted = set(user_tokens)
        rows = [(u, r) for u, r in zip(listed.users, listed.items) if u in wanted]
        if not rows:
            raise RecBoleLLMError(f"{spec.path} lists none of the evaluated users.")
        return CandidateSet([u for u, _ in rows], [r for _, r in rows])

    key = {
        "dataset": config["dataset"],
        "split": split_fingerprint(ds, split.seen.nnz, split.test_pairs),
        "protocol": asdict(spec),
        "eval_users": config["eval_users"],
        "seed": config["seed"],
    }

    def create() -> CandidateSet:
        if spec.type == "full":
            return CandidateSet(user_tokens, None)
        if spec.type == "retriever":
            if retrieve is None:
                raise RecBoleLLMError("The retriever protocol needs a retriever to run.")
            return CandidateSet(user_tokens, retrieve(spec, user_tokens))
        weights = None
        if spec.type == "popularity":
            weights = np.asarray(split.history("test").sum(axis=0)).ravel() + 1e-12
        positives = group_by_user(*split.test_pairs)
        rng = np.random.default_rng(config["seed"])
        items = sample_candidates(users, positives, split.seen, spec.size, rng, weights)
        return CandidateSet(user_tokens, [list(r) for r in ds.id2token(ds.iid_field, items)])

    path = store_path(config["candidates_dir"], config["dataset"], spec, key)
    return load_or_create(path, key, create, full=spec.type == "full")


def check_protocol_config(config) -> ProtocolSpec:
    """Validate the protocol keys before any training, so a typo costs seconds, not an epoch."""
    eval_users = config["eval_users"]
    if eval_users is not None and (not isinstance(eval_users, int) or eval_users < 1):
        raise RecBoleLLMError(f"eval_users must be a positive integer or null, not {eval_users!r}.")
    spec = ProtocolSpec.parse(config["candidates"])
    if spec.type == "file" and not Path(spec.path).is_file():
        raise RecBoleLLMError(f"Candidate file not found: {spec.path}")
    if spec.type == "full" and getattr(config.model_class, "ranks_candidate_lists_only", False):
        raise RecBoleLLMError(
            f"{config['model']} ranks candidate lists, not every item: use a candidate protocol such as "
            "--candidates=\"{'type': 'uniform', 'size': 20}\"."
        )
    return spec


def build_test_loader(config, split: Split, spec: ProtocolSpec, retrieve: Retrieve | None = None):
    """RecBole's test loader restricted to the evaluated users, carrying its `protocol`."""
    ds = split.dataset
    cs = _candidate_set(config, split, spec, retrieve)
    users = _to_ids(ds, ds.uid_field, cs.users)
    candidates = None
    if cs.items is not None:
        if len({len(r) for r in cs.items}) != 1:
            raise RecBoleLLMError("Every user must have the same number of candidates.")
        item_ids = _to_ids(ds, ds.iid_field, cs.items).reshape(len(users), -1)
        candidates = torch.zeros((split.n_users, item_ids.shape[1]), dtype=torch.long)
        candidates[torch.from_numpy(users)] = torch.from_numpy(item_ids)
    history = split.history("test") if config["mask_history"] else None
    ds_test = split.test._dataset
    loader = subset_loader(config, split.test, np.isin(ds_test.inter_feat[ds_test.uid_field].numpy(), users))
    loader.protocol = EvalProtocol(spec.label, len(users), candidates, history)
    return loader


def attach_validation_protocol(config, split: Split) -> None:
    """Validation (model selection) always ranks all items, with the same masking rule."""
    history = split.history("valid") if config["mask_history"] else None
    n_valid = len(np.unique(split.valid_pairs[0]))
    split.valid.protocol = EvalProtocol("full", n_valid, None, history)
