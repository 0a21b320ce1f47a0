"""The protocol-aware evaluation that every trainer gets, whatever RecBole trainer it extends."""

from __future__ import annotations

import functools
import itertools
import math
import time
from contextlib import contextmanager

import numpy as np
import torch
from recbole.trainer import Trainer

from recbole_llm.evaluation.graded import graded_ndcg
from recbole_llm.evaluation.passes import passes_loss, uses_passes
from recbole_llm.evaluation.per_user import topk_per_user
from recbole_llm.evaluation.resume import ResumableTraining
from recbole_llm.evaluation.scoring import score_all_items, score_candidates
from recbole_llm.evaluation.ties import TieAwareCollector


@contextmanager
def trusted_checkpoints():
    """Let RecBole load the checkpoints it wrote itself.

    They pickle RecBole's Config, which torch>=2.6 refuses under its `weights_only=True` default.
    The switch lasts only for the call that loads the trainer's own files.
    """
    original = torch.load
    torch.load = functools.partial(original, weights_only=False)
    try:
        yield
    finally:
        torch.load = original


class EpochBudget:
    """A train loader cut to its first `batches` batches per epoch (`train_examples_per_epoch`).

    The loader reshuffles every epoch, so each epoch trains on another random subset: a CPU budget for
    models whose full epoch costs hours (a fine-tuned encoder or LLM). Everything else is the loader's.
    """

    def __init__(self, loader, batches: int):
        self.loader, self.batches = loader, batches

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.batches)

    def __len__(self) -> int:
        return min(self.batches, len(self.loader))

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


class ProtocolEvaluation:
    """Mixin for a RecBole trainer: scores each loader under its `protocol` with tie-safe metrics.

    A loader built by recbole_llm carries an `EvalProtocol`: the test loader its candidate lists,
    the validation loader full ranking. Without one, RecBole's own evaluation runs unchanged.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.eval_collector = TieAwareCollector(config)
        self._protocol = None
        self._graded: list[torch.Tensor] = []  # per-batch graded NDCG rows (graded protocol)
        self._users: list[torch.Tensor] = []  # per-batch internal user ids, in the collector's row order
        self.epoch_seconds: list[float] = []  # pure training time per epoch, for cost comparisons
        # [epochs trained, validation score] of every validation during fit: the learning curve.
        self.valid_curve: list[list[float]] = []

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = time.perf_counter()
        examples = self.config["train_examples_per_epoch"]
        if examples is not None:
            train_data = EpochBudget(train_data, math.ceil(examples / self.config["train_batch_size"]))
        if uses_passes(self, loss_func):
            loss_func = functools.partial(passes_loss, self.model)
        try:
            return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        finally:
            self.epoch_seconds.append(time.perf_counter() - start)

    def _valid_epoch(self, valid_data, *args, **kwargs):
        """RecBole's validation, its score kept per epoch: RecBole only logs it, and keeps the best."""
        score, result = super()._valid_epoch(valid_data, *args, **kwargs)
        self.valid_curve.append([len(self.epoch_seconds), float(score)])
        return score, result

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        self._protocol, self._graded, self._users = getattr(eval_data, "protocol", None), [], []
        with trusted_checkpoints():
            result = super().evaluate(eval_data, load_best_model, model_file, show_progress)
        if self._protocol is None or self._protocol.gains is None:
            return result
        # Graded lists: NDCG with rating gains replaces RecBole's metrics of the window's first item.
        means = torch.cat(self._graded).mean(0).tolist()
        places = self.config["metric_decimal_place"]
        return {f"ndcg@{k}": round(m, places) for k, m in zip(self._protocol.cutoffs, means)}

    def per_user(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Internal ids of the users of the last protocol evaluation and each one's value of every
        reported top-k metric (graded lists: graded NDCG); a column's mean is the reported metric."""
        if self._protocol is None:
            raise RuntimeError("per_user() needs an evaluation on a loader built by recbole_llm")
        users = torch.cat(self._users).cpu().numpy()
        if self._protocol.gains is None:
            return users, topk_per_user(self.config, self.eval_collector.last_struct)
        rows = torch.cat(self._graded).numpy()
        return users, {f"ndcg@{k}": rows[:, i] for i, k in enumerate(self._protocol.cutoffs)}

    def resume_checkpoint(self, resume_file):
        with trusted_checkpoints():
            return super().resume_checkpoint(resume_file)

    def _full_sort_batch_eval(self, batched_data):
        protocol = self._protocol
        if protocol is None:
            return super()._full_sort_batch_eval(batched_data)
        interaction, _, positive_u, positive_i = batched_data
        interaction = interaction.to(self.device)
        users = interaction[self.config["USER_ID_FIELD"]]
        self._users.append(users.cpu())
        if protocol.candidates is None:
            scores = score_all_items(
                self.model, interaction, self.tot_item_num, self.item_tensor, self.test_batch_size
            )
            protocol.mask_history(scores, users)
        else:
            candidates = protocol.candidates_for(users)
            candidate_scores = score_candidates(
                self.model, interaction, candidates, self.item_tensor, self.test_batch_size
            )
            if protocol.gains is not None:
                self._graded.append(
                    graded_ndcg(candidate_scores, protocol.gains_for(users), protocol.cutoffs).cpu()
                )
            scores = torch.full((len(users), self.tot_item_num), -np.inf, device=self.device)
            scores.scatter_(1, candidates, candidate_scores.float())
        scores[:, 0] = -np.inf  # padding item
        return interaction, scores, positive_u, positive_i


@functools.cache
def with_protocol(trainer_class: type) -> type:
    """`trainer_class` extended with `ProtocolEvaluation` (itself if it already is) and, for an
    epoch-based RecBole `Trainer`, with `ResumableTraining`.

    Resuming comes first so that its per-epoch save stays out of `epoch_seconds`.
    """
    if issubclass(trainer_class, ProtocolEvaluation):
        return trainer_class
    mixins = (ResumableTraining,) if issubclass(trainer_class, Trainer) else ()
    return type(
        trainer_class.__name__, (*mixins, ProtocolEvaluation, trainer_class), {"__module__": __name__}
    )
