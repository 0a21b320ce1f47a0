"""Bind protocols to a split: the evaluated users, their candidate lists, and what is masked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recbole_llm.data.candidates import (
    CandidateSet,
    load_or_create,
    sample_candidates,
    select_users,
    split_fingerprint,
    store_path,
    token_order,
)
from recbole_llm.data.protocols import (
    File,
    Full,
    Graded,
    Popularity,
    Protocol,
    Retriever,
    Sized,
    Uniform,
    parse_protocol,
)
from recbole_llm.data.split import Split, loaded_inter_columns, subset_loader
from recbole_llm.errors import RecBoleLLMError

# retrieve(protocol, user_tokens) -> candidate item tokens per user
Retrieve = Callable[[Retriever, list[str]], list[list[str]]]


@dataclass
class EvalProtocol:
    """What the trainer needs to score one phase: candidates per user, or history to mask."""

    label: str
    n_users: int  # evaluated users
    candidates: torch.Tensor | None  # n_users x N internal item ids; None ranks all items
    history: sp.csr_matrix | None  # items ranked last in full ranking (mask_history)
    lists_sha: str | None = None  # content hash of the evaluated users' lists
    set_sha: str | None = None  # content hash of the lists of the protocol's whole user pool
    set_users: int | None = None  # users in that pool
    gains: torch.Tensor | None = None  # n_users x N graded relevance of the candidates (graded protocol)
    cutoffs: tuple[int, ...] = ()  # the graded NDCG cutoffs

    def candidates_for(self, users: torch.Tensor) -> torch.Tensor:
        return self.candidates[users.cpu()].to(users.device)

    def gains_for(self, users: torch.Tensor) -> torch.Tensor:
        return self.gains[users.cpu()].to(users.device)

    def mask_history(self, scores: torch.Tensor, users: torch.Tensor) -> None:
        """Set the scores of each user's already-seen items to -inf, in place."""
        if self.history is None:
            return
        seen = self.history[users.cpu().numpy()].tocoo()
        scores[torch.from_numpy(seen.row).long(), torch.from_numpy(seen.col).long()] = -np.inf

    def record(self) -> dict:
        """What a result file keeps to prove which lists were ranked."""
        return {
            "n_users": self.n_users,
            "lists_sha256": self.lists_sha,
            "set_sha256": self.set_sha,
            "set_users": self.set_users,
        }


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


def _phase_pairs(split: Split, phase: str) -> tuple[np.ndarray, np.ndarray]:
    return split.test_pairs if phase == "test" else split.valid_pairs


def _evaluated_users(split: Split, phase: str = "test") -> list[str]:
    ds = split.dataset
    return sorted(ds.id2token(ds.uid_field, np.unique(_phase_pairs(split, phase)[0])))


def _draw_negatives(split: Split, protocol: Sized, users: list[str], phase: str = "test") -> list[list[str]]:
    """Each user's ground truth of `phase` and `size - 1` unseen items, drawn over items in token order;
    popularity counts only interactions before that phase."""
    ds = split.dataset
    order = token_order(ds, ds.iid_field)
    rank = np.argsort(order)  # internal id -> position in token order
    user_ids = _to_ids(ds, ds.uid_field, users)
    positives = {u: rank[i] for u, i in group_by_user(*_phase_pairs(split, phase)).items()}
    weights = None
    if isinstance(protocol, Popularity):
        weights = np.asarray(split.history(phase).sum(axis=0)).ravel()[order] + 1e-12
    rng = np.random.default_rng(protocol.seed)
    rows = sample_candidates(user_ids, positives, split.seen[:, order].tocsr(), protocol.size, rng, weights)
    return [list(r) for r in ds.id2token(ds.iid_field, order[rows])]


def _read_file(split: Split, protocol: File) -> CandidateSet:
    """The file's lists, checked against the data, shuffled per user unless `shuffle: false`."""
    listed = CandidateSet.read(protocol.path)
    ds = split.dataset
    _to_ids(ds, ds.uid_field, listed.users)
    _to_ids(ds, ds.iid_field, [i for r in listed.items for i in r])
    not_tested = sorted(set(listed.users) - set(_evaluated_users(split)))
    if not_tested:
        raise RecBoleLLMError(
            f"{protocol.path} lists {len(not_tested)} user(s) without a test interaction "
            f"(e.g. {not_tested[0]!r}); list test users only."
        )
    if not protocol.shuffle:
        return listed
    rng = np.random.default_rng([protocol.seed, 2])
    items = rng.permuted(np.asarray(listed.items, dtype=object), axis=1)
    return CandidateSet(listed.users, [list(r) for r in items])


def _cold_users(split: Split, users: list[str], max_count: int) -> list[str]:
    """The `users` whose test item has at most `max_count` training interactions (cold items)."""
    ds = split.dataset
    counts = np.asarray(split.history("valid").sum(axis=0)).ravel()  # every interaction before valid/test
    truth = group_by_user(*split.test_pairs)
    ids = _to_ids(ds, ds.uid_field, users)
    return [u for u, i in zip(users, ids) if counts[truth[int(i)]].max() <= max_count]


def _graded_lists(split: Split, protocol: Graded) -> CandidateSet:
    """Every graded user's window, shuffled with the seed per user in token order."""
    ds = split.dataset
    users = sorted(ds.id2token(ds.uid_field, list(split.windows.items)))
    rng = np.random.default_rng([protocol.seed, 3])
    windows = [split.windows.items[int(u)] for u in _to_ids(ds, ds.uid_field, users)]
    return CandidateSet(users, [list(ds.id2token(ds.iid_field, rng.permutation(w))) for w in windows])


def _graded_gains(split: Split, protocol: Graded, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    """n_users x size gains of the listed items: their rating, or 2^rating - 1 (`gain: exp`)."""
    gains = torch.zeros((split.n_users, items.shape[1]), dtype=torch.float64)
    for user, row in zip(users, items):
        rating = dict(zip(split.windows.items[int(user)].tolist(), split.windows.ratings[int(user)]))
        gains[int(user)] = torch.tensor([rating[int(i)] for i in row], dtype=torch.float64)
    return gains if protocol.gain == "rating" else torch.exp2(gains) - 1


def _pool_set(config, split: Split, protocol: Protocol, retrieve: Retrieve | None) -> CandidateSet:
    """The lists of every user the protocol can evaluate; drawn lists are stored and reused."""
    if isinstance(protocol, Full):
        return CandidateSet(_evaluated_users(split), None)
    if isinstance(protocol, File):
        return _read_file(split, protocol)
    if isinstance(protocol, Graded) and split.windows is None:
        raise RecBoleLLMError(
            f"'{protocol.label}' needs its windows held out: train with it as the protocol."
        )
    users = _evaluated_users(split)
    ds = split.dataset
    key = {
        "dataset": config["dataset"],
        "split": split_fingerprint(ds, split.seen.nnz, split.test_pairs),
        **protocol.set_identity(),
    }

    def create() -> CandidateSet:
        if isinstance(protocol, Graded):
            return _graded_lists(split, protocol)
        if isinstance(protocol, Retriever):
            if retrieve is None:
                raise RecBoleLLMError("The retriever protocol needs a retriever to run.")
            return CandidateSet(users, retrieve(protocol, users))
        return CandidateSet(users, _draw_negatives(split, protocol, users))

    path = store_path(config["candidates_dir"], config["dataset"], f"{protocol.name}-s{protocol.seed}", key)
    return load_or_create(path, key, create, full=False)


def resolve_protocols(config, blocks: list | None = None) -> list[Protocol]:
    """The protocols a run tests (default: its `candidates` block), checked against its model, and its
    `valid_candidates` block checked too.

    Done before any data or model is loaded, so a typo or an impossible pairing costs seconds.
    """
    blocks = [config["candidates"]] if blocks is None else blocks
    protocols = [parse_protocol(b, config["eval_users"], config["seed"]) for b in blocks]
    labels = [p.label for p in protocols]
    if len(set(labels)) != len(labels):
        raise RecBoleLLMError(f"Protocols must differ; these repeat: {sorted(labels)}.")
    for protocol in protocols:
        protocol.check_model(config["model"], config.model_class)
    if any(isinstance(p, Graded) for p in protocols):
        if len(protocols) > 1:
            raise RecBoleLLMError(
                f"A graded protocol holds out its own split, so it is tested alone, not with {labels}."
            )
        check_graded_config(config)
    validation_protocol(config)
    return protocols


def graded_protocol(protocols: list[Protocol]) -> Graded | None:
    """The run's graded protocol (tested alone: resolve_protocols), whose windows its split holds out."""
    return next((p for p in protocols if isinstance(p, Graded)), None)


def check_graded_config(config) -> None:
    """Fail in one line, before any data is loaded, when the run cannot hold out graded windows."""
    rating = config["RATING_FIELD"]
    if not rating or rating not in loaded_inter_columns(config):
        raise RecBoleLLMError(
            f"candidates.type graded ranks by rating, but {config['dataset']} loads no '{rating}' column: "
            "add a rating column to the .inter file (or set RATING_FIELD / load_col)."
        )
    eval_args = config["eval_args"]
    if eval_args["split"] != {"LS": "valid_and_test"} or eval_args["order"] != "TO":
        raise RecBoleLLMError(
            "candidates.type graded needs the time-ordered leave-one-out split "
            "(eval_args: {split: {LS: valid_and_test}, order: TO}); remove the eval_args override."
        )
    if config["benchmark_filename"] is not None:
        raise RecBoleLLMError("candidates.type graded cannot hold out windows of a pre-split benchmark.")


def validation_protocol(config) -> Sized | None:
    """The drawn lists validation ranks (`valid_candidates`: uniform or popularity), or None: all items.

    A model that ranks candidate lists only (a fine-tuned LLM ranker) cannot rank every item, so its
    early stopping needs lists; they are drawn like test lists, around each user's validation item.
    """
    block = config["valid_candidates"]
    if block is None:
        return None
    protocol = parse_protocol(block, None, config["seed"])
    if not isinstance(protocol, Uniform | Popularity) or protocol.cold_items is not None:
        raise RecBoleLLMError(
            f"valid_candidates must be a uniform or popularity block such as {{type: uniform, size: 20}}, "
            f"or null (validation ranks all items), not {block!r}."
        )
    return protocol


def build_test_loader(config, split: Split, protocol: Protocol, retrieve: Retrieve | None = None):
    """RecBole's test loader restricted to the evaluated users, carrying its `protocol`."""
    ds = split.dataset
    pool = _pool_set(config, split, protocol, retrieve)
    eligible = (
        pool.users if protocol.cold_items is None else _cold_users(split, pool.users, protocol.cold_items)
    )
    cs = pool.subset(select_users(eligible, protocol.eval_users, protocol.seed))
    users = _to_ids(ds, ds.uid_field, cs.users)
    candidates = None
    if cs.items is not None:
        item_ids = _to_ids(ds, ds.iid_field, cs.items).reshape(len(users), -1)
        candidates = torch.zeros((split.n_users, item_ids.shape[1]), dtype=torch.long)
        candidates[torch.from_numpy(users)] = torch.from_numpy(item_ids)
    graded = {}
    if isinstance(protocol, Graded):
        graded = {"gains": _graded_gains(split, protocol, users, item_ids), "cutoffs": protocol.cutoffs}
    history = split.history("test") if config["mask_history"] else None
    ds_test = split.test._dataset
    loader = subset_loader(config, split.test, np.isin(ds_test.inter_feat[ds_test.uid_field].numpy(), users))
    loader.protocol = EvalProtocol(
        protocol.label, len(users), candidates, history, cs.digest(), pool.digest(), len(pool.users), **graded
    )
    return loader


def attach_validation_protocol(config, split: Split) -> None:
    """Validation (model selection) ranks all items, with the same masking rule, or the lists of
    `valid_candidates` (validation_protocol) for a seeded subset of its `eval_users` users."""
    history = split.history("valid") if config["mask_history"] else None
    protocol = validation_protocol(config)
    if protocol is None:
        n_valid = len(np.unique(split.valid_pairs[0]))
        split.valid.protocol = EvalProtocol("full", n_valid, None, history)
        return
    ds = split.dataset
    tokens = select_users(_evaluated_users(split, "valid"), protocol.eval_users, protocol.seed)
    users = _to_ids(ds, ds.uid_field, tokens)
    items = _to_ids(ds, ds.iid_field, _draw_negatives(split, protocol, tokens, "valid")).reshape(
        len(users), -1
    )
    candidates = torch.zeros((split.n_users, protocol.size), dtype=torch.long)
    candidates[torch.from_numpy(users)] = torch.from_numpy(items)
    ds_valid = split.valid._dataset
    keep = np.isin(ds_valid.inter_feat[ds_valid.uid_field].numpy(), users)
    split.valid = subset_loader(config, split.valid, keep)
    split.valid.protocol = EvalProtocol(protocol.label, len(users), candidates, history)
