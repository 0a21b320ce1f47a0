"""TwoStage: a retriever's top-k re-ranked by a ranker, evaluated as one model over all items.

LLM recommenders are deployed as two stages: a cheap retriever picks `top_k` items, a costly ranker
orders them. Scored under the `full` protocol, the pipeline sits in the same table as full-ranking
models: `full_sort_predict` puts the re-ranked top-k first and every other item after them in the
retriever's order. Its scores are strictly ordered, so the evaluator's pessimistic tie rule never
reorders what the pipeline decided (ranker ties keep the retriever's order; retriever ties put the
lower item id first). Both stages are trained when the pipeline is built; it has nothing of its own
to train, so fitting (and validation) is skipped.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.evaluation.scoring import score_all_items, score_candidates
from recbole_llm.models.retrieval.stages import check_stage, fit_stage, stage_spec


class TwoStage(SequentialRecommender):
    # Sequential, so that its batches carry both user ids (general stages) and histories (sequential ones).
    input_type = InputType.POINTWISE
    ranks_all_items_only = True  # checked against every tested protocol before any work

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # RecBole's trainer needs a parameter for its optimiser; none requires grad: fitting is skipped.
        self.no_weights = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.top_k = int(config["top_k"])
        self.shuffle = bool(config["shuffle_candidates"])
        self.seed = int(config["seed"])
        self.max_rows = int(config["eval_batch_size"])
        self.item_features = dataset.get_item_feature().to(config["device"])
        retriever = fit_stage(config, "retriever", dataset)
        same = stage_spec(config, "ranker") == stage_spec(config, "retriever")
        ranker = retriever if same else fit_stage(config, "ranker", dataset)
        self.retriever, self.ranker = retriever.model, ranker.model
        self.retriever.requires_grad_(False)  # trained already; TwoStage itself is never fitted
        self.ranker.requires_grad_(False)
        # What the evaluator masks at test time, the only phase a TwoStage model is evaluated in.
        self.exclude = retriever.split.history("test") if config["mask_history"] else None
        self._reset_counts()

    @classmethod
    def check_config(cls, config) -> None:
        """Stage names and settings, `top_k` and the protocol, checked before any data is loaded."""
        top_k = config["top_k"]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise RecBoleLLMError(f"top_k must be a positive integer (items the ranker sees), not {top_k!r}.")
        retriever = check_stage(config, "retriever")
        check_stage(config, "ranker")
        if getattr(retriever, "ranks_candidate_lists_only", False):
            raise RecBoleLLMError(
                f"{config['retriever']} ranks candidate lists only, so it cannot retrieve: rank with it."
            )

    def calculate_loss(self, interaction):
        raise RecBoleLLMError(
            "TwoStage trains its stages when it is built; it has nothing of its own to train."
        )

    def predict(self, interaction):
        raise RecBoleLLMError("TwoStage ranks every item: evaluate it under candidates: full.")

    @torch.no_grad()
    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Scores [users, items]: the re-ranked top-k above all others, the rest in the retriever's order."""
        top, order = self._retrieve(interaction)
        start = time.perf_counter()
        reranked = self._rerank(interaction, top)
        self.ranker_seconds += time.perf_counter() - start
        self.users += len(top)
        self.hits += int((top == interaction[self.ITEM_ID].unsqueeze(1)).any(1).sum())
        n, k = order.shape[1], top.shape[1]
        positions = torch.arange(max(n, k), dtype=torch.float32, device=order.device)
        scores = torch.empty(order.shape, device=order.device)
        scores.scatter_(1, order, -positions[:n].expand_as(order))
        scores.scatter_(1, reranked, (n + k - positions[:k]).expand_as(reranked))
        return scores

    def _retrieve(self, interaction) -> tuple[torch.Tensor, torch.Tensor]:
        """The retriever's top-k [users, k] (through its index when it has one) and all items [users, n]
        in its order; only the top-k counts as retrieval cost."""
        start = time.perf_counter()
        if hasattr(self.retriever, "retrieve"):
            top, _ = self.retriever.retrieve(interaction, self.top_k, self.exclude)
            self.retriever_seconds += time.perf_counter() - start
            order = self._retriever_order(interaction)
            return top.to(order.device), order
        order = self._retriever_order(interaction)
        top = order[:, : self.top_k]
        self.retriever_seconds += time.perf_counter() - start
        return top, order

    def _retriever_order(self, interaction) -> torch.Tensor:
        """All items, best first by the retriever's scores; padding and excluded items last."""
        scores = score_all_items(self.retriever, interaction, self.n_items, self.item_features, self.max_rows)
        scores = scores.to(torch.float32, copy=True)
        scores[:, 0] = -torch.inf
        if self.exclude is not None:
            seen = self.exclude[interaction[self.USER_ID].cpu().numpy()].tocoo()
            scores[torch.from_numpy(seen.row).long(), torch.from_numpy(seen.col).long()] = -torch.inf
        return torch.sort(scores, dim=1, descending=True, stable=True).indices

    def _rerank(self, interaction, top: torch.Tensor) -> torch.Tensor:
        """`top` ordered by the ranker, best first; the ranker sees each list shuffled per user
        (`shuffle_candidates`) so that a position-biased ranker cannot copy the retriever's order."""
        shown = top
        if self.shuffle:
            k, users = top.shape[1], interaction[self.USER_ID].cpu().numpy()
            perms = np.stack([np.random.default_rng([self.seed, int(u)]).permutation(k) for u in users])
            perms = torch.from_numpy(perms).to(top.device)
            shown = top.gather(1, perms)
        scores = score_candidates(self.ranker, interaction, shown, self.item_features, self.max_rows).float()
        if self.shuffle:
            scores = torch.empty_like(scores).scatter_(1, perms, scores)  # back to the retriever's order
        return top.gather(1, torch.sort(scores, dim=1, descending=True, stable=True).indices)

    def evaluation_report(self) -> dict:
        """The retriever's Recall@k (the ranker's ceiling) and the cost of both stages since the last
        report, with the ranker's own report (an LLM's cost and parsing) when it has one."""
        users = max(self.users, 1)
        own = getattr(self.ranker, "evaluation_report", None)
        ranker_report = own() if own is not None else {}
        # An LLM ranker knows its cost best: answers read from its cache cost nothing.
        ranker_seconds = ranker_report.get("seconds_per_user", self.ranker_seconds / users)
        retriever_seconds = self.retriever_seconds / users
        report = {
            **ranker_report,
            f"retriever_recall@{self.top_k}": self.hits / self.users if self.users else None,
            "retriever_seconds_per_user": retriever_seconds,
            "ranker_seconds_per_user": ranker_seconds,
            "seconds_per_user": None if ranker_seconds is None else retriever_seconds + ranker_seconds,
            "users": self.users,
        }
        self._reset_counts()
        return report

    def _reset_counts(self) -> None:
        self.users, self.hits, self.retriever_seconds, self.ranker_seconds = 0, 0, 0.0, 0.0
