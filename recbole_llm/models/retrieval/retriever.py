"""EmbeddingRetriever: text-embedding retrieval as a RecBole model, zero-shot or with a fine-tuned encoder.

Items are embedded once from their `.item` text (the `item_text` template the LLM rankers use), a user
by a query built from their history (`query_mode`); a score is a cosine similarity. Full ranking
(`full_sort_predict`) multiplies the queries by all item vectors: exact, and cheap next to the dense
[users, items] score matrix the evaluator needs anyway. The FAISS index serves `retrieve`, where only
each user's top k is wanted (the `retriever` candidate protocol, two-stage pipelines); built on first
use, so runs that never retrieve never build it.
"""

from __future__ import annotations

from logging import getLogger

import numpy as np
import scipy.sparse as sp
import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llm.data.item_text import check_item_text_fields, item_texts
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm.augment import augment_from_config, check_augment_config
from recbole_llm.llm.factory import build_backend, check_backend_name
from recbole_llm.llm.memory import ProfileWriter
from recbole_llm.models.retrieval.embedding_cache import EmbeddingCache
from recbole_llm.models.retrieval.encoders import build_encoder, check_encoder_config
from recbole_llm.models.retrieval.finetune import EncoderTuning, check_finetune_config
from recbole_llm.models.retrieval.index import build_index, index_settings, unit_rows
from recbole_llm.models.retrieval.queries import check_query_config, make_query


def uses_llm(config) -> bool:
    """Whether an LLM writes texts for the retriever: item descriptions or user profiles."""
    return bool(config["augment_items"]) or config["query_mode"] == "profile"


class EmbeddingRetriever(SequentialRecommender):
    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # RecBole's trainer needs a parameter for its optimiser; zero-shot, none requires grad: fitting is
        # skipped. With `finetune`, the encoder's parameters train (finetune.py).
        self.no_weights = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.batch_size = int(config["encode_batch_size"])
        self.show_progress = bool(config["show_progress"])
        self.llm = build_backend(config) if uses_llm(config) else None
        self.texts = augment_from_config(item_texts(config, dataset, config["item_text"]), self.llm, config)
        self.encoder = build_encoder(config)
        self.cache = EmbeddingCache(config["embedding_cache_dir"])
        self.register_buffer("item_vectors", self._encode_items(), persistent=False)
        getLogger().info(
            f"EmbeddingRetriever: {len(self.texts) - 1} items, {self.cache.misses} texts encoded, "
            f"{self.cache.hits} read from the cache ({config['embedding_cache_dir']})"
        )
        profiles = ProfileWriter.from_config(self.llm, config) if self.llm is not None else None
        self.query = make_query(config, self.texts, self.encode_queries, profiles)
        self.index_settings = index_settings(config["index"])
        self._index = None
        self.tuning, self._weights_changed = None, False
        if config["finetune"]:
            # A registered submodule: the optimiser trains it, checkpoints and resume states hold it.
            self.sentence_model = self.encoder.model
            k = config["finetune_max_his_len"] or config["max_his_len"]
            self.tuning = EncoderTuning(self.sentence_model, self.texts, int(k))

    @classmethod
    def check_config(cls, config) -> None:
        """Settings that would otherwise fail only after the data are loaded or the items encoded."""
        batch_size = config["encode_batch_size"]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise RecBoleLLMError(f"encode_batch_size must be a positive integer, not {batch_size!r}.")
        check_query_config(config)
        check_finetune_config(config)
        index_settings(config["index"])
        check_encoder_config(config)
        check_item_text_fields(config, config["item_text"])
        check_augment_config(config)
        if uses_llm(config):
            check_backend_name(config["llm_backend"])

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.cache.encode(self.encoder, texts, True, self.batch_size, self.show_progress)

    def _encode_items(self) -> torch.Tensor:
        """Unit item vectors [n_items, d], the padding item's zero."""
        vectors = self.cache.encode(self.encoder, self.texts[1:], False, self.batch_size, self.show_progress)
        vectors = np.concatenate([np.zeros((1, vectors.shape[1]), np.float32), unit_rows(vectors)])
        return torch.from_numpy(vectors)

    def _refresh_item_vectors(self) -> None:
        """Re-encode the items once the encoder's weights have changed (a training step, loaded weights).

        The embedding cache keys vectors by the encoder's files, which tuned weights no longer match, so
        from then on every text is encoded afresh: all items once per validation, a cost that grows with
        the catalogue (ml-100k's 1,682 titles: seconds; a million items: hours on CPU).
        """
        if not self._weights_changed:
            return
        self.cache = EmbeddingCache(None)
        self.item_vectors = self._encode_items().to(self.item_vectors.device)
        self._index, self._weights_changed = None, False

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Loaded weights (the best epoch's, a resume state's) make the item vectors stale too."""
        self._weights_changed = self.tuning is not None
        return super().load_state_dict(state_dict, strict, assign)

    def queries(self, interaction) -> torch.Tensor:
        """Unit query vectors [users, d] of the batch's users.

        Every scoring path builds its queries first, so the item vectors it reads next are current.
        """
        self._refresh_item_vectors()
        return self.query(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], self.item_vectors)

    def calculate_loss(self, interaction):
        if self.tuning is None:
            raise RecBoleLLMError("EmbeddingRetriever is zero-shot: set finetune: True to train its encoder.")
        self._weights_changed = True
        return self.tuning.loss(
            interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction[self.POS_ITEM_ID]
        )

    def predict(self, interaction) -> torch.Tensor:
        return (self.queries(interaction) * self.item_vectors[interaction[self.ITEM_ID]]).sum(-1)

    def predict_candidates(self, interaction, candidates: torch.Tensor) -> torch.Tensor:
        """Scores [users, N] of each user's candidates, the query built once per user."""
        return torch.einsum("ud,und->un", self.queries(interaction), self.item_vectors[candidates])

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.queries(interaction) @ self.item_vectors.T

    @property
    def index(self):
        """The FAISS index over items 1..n-1 (FAISS id j is item j + 1), built on first use."""
        if self._index is None:
            self._index = build_index(self.item_vectors[1:].cpu().numpy(), self.index_settings)
        return self._index

    @torch.no_grad()
    def retrieve(
        self, interaction, k: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each user's top `k` items through the index, best first: ids and scores, [users, k].

        `exclude` (rows: internal user ids) names items a user must not get, e.g. their history. The
        index is searched deep enough to skip them; a user that an approximate index leaves short of
        `k` allowed items is searched exactly, and only a user with fewer than `k` allowed items in
        the whole catalogue gets -inf scores at the end of their row.
        """
        queries = self.queries(interaction).cpu().numpy()
        users = interaction[self.USER_ID].cpu().numpy()
        n_excluded = np.diff(exclude.indptr)[users] if exclude is not None else np.zeros(1, np.int64)
        depth = min(self.n_items - 1, k + int(n_excluded.max()))
        found_scores, found = self.index.search(queries, depth)
        found_items = found + 1  # FAISS id j is item j + 1; its -1 (nothing found) becomes the padding item
        blocked = found < 0
        if exclude is not None:
            seen = exclude[users].tocoo()  # rows: positions in the batch
            pair_keys = np.arange(len(users))[:, None] * self.n_items + found_items
            blocked |= np.isin(pair_keys, seen.row * self.n_items + seen.col)
        keep = np.argsort(blocked, axis=1, kind="stable")[:, :k]  # allowed results first, in rank order
        items = np.zeros((len(users), k), dtype=np.int64)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        items[:, : keep.shape[1]] = np.take_along_axis(found_items, keep, 1)
        scores[:, : keep.shape[1]] = np.take_along_axis(found_scores, keep, 1)
        short = np.take_along_axis(blocked, keep, 1).any(axis=1) | (keep.shape[1] < k)
        if short.any():
            items[short], scores[short] = self._exact_top(queries[short], users[short], k, exclude)
        device = self.item_vectors.device
        return torch.from_numpy(items).to(device), torch.from_numpy(scores).to(device)

    def _exact_top(
        self, queries: np.ndarray, users: np.ndarray, k: int, exclude
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top `k` by brute force, the padding item and `exclude` scored -inf."""
        scores = queries @ self.item_vectors.cpu().numpy().T
        scores[:, 0] = -np.inf
        if exclude is not None:
            seen = exclude[users].tocoo()
            scores[seen.row, seen.col] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return top, np.take_along_axis(scores, top, 1)
