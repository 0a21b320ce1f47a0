"""LLMRanker: a zero-shot LLM that ranks each evaluated user's candidate list, as a RecBole model.

It has no weights to train: `run_recbole --model=LLMRanker` skips fitting and scores the test
candidate lists (the same lists every other model of a leaderboard ranks) through
`predict_candidates`. Bootstrapping ranks B seeded permutations of each list and sums Borda points
(Hou et al. 2024); `position_probe` moves the ground truth to a fixed slot to measure position bias.
Memory (an LLM-written profile, the last few items) and augmented item texts are switched on in
config: recbole_llm/llm/memory.py and augment.py.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from tqdm import tqdm

from recbole_llm.data.item_text import check_item_text_fields, item_texts
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm.augment import augment_from_config, check_augment_config
from recbole_llm.llm.backend import Backend
from recbole_llm.llm.factory import build_backend, check_backend_name
from recbole_llm.llm.memory import ProfileWriter, check_memory_config
from recbole_llm.models.llm.modes import RankRequest, check_mode_config, make_mode


def borda_points(scores: np.ndarray) -> np.ndarray:
    """Points of each candidate: how many candidates it beats. Equal scores earn equal points."""
    return (scores[:, None] > scores[None, :]).sum(1).astype(float)


class LLMRanker(SequentialRecommender):
    input_type = InputType.POINTWISE
    ranks_candidate_lists_only = True  # checked before any data or model is loaded

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # RecBole's trainer needs a parameter to build its optimiser; nothing here is trained.
        self.no_weights = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.max_his_len = int(config["max_his_len"])
        self.bootstrap = int(config["bootstrap"])
        self.position_probe = config["position_probe"]
        self.seed = int(config["seed"])
        self.show_progress = bool(config["show_progress"])
        self.users_per_call = int(config["llm_batch_size"])
        self.backend = self.make_backend(config)
        self.texts = augment_from_config(
            item_texts(config, dataset, config["item_text"]), self.backend, config
        )
        self.profiles = ProfileWriter.from_config(self.backend, config) if config["user_profile"] else None
        self.short_term = config["short_term_items"]
        self.mode = make_mode(self.backend, config)
        self.seconds, self.users = 0.0, 0
        self._cache_seen = self._cache_counts()

    def make_backend(self, config) -> Backend:
        """The LLM that answers: the configured backend behind the response cache."""
        return build_backend(config)

    @classmethod
    def check_config(cls, config) -> None:
        """Settings that would otherwise fail only after the data and the LLM are loaded."""
        if int(config["bootstrap"]) < 1:
            raise RecBoleLLMError(f"bootstrap must be >= 1 (1: no bootstrapping), not {config['bootstrap']}.")
        check_mode_config(config)
        check_backend_name(config["llm_backend"])
        check_item_text_fields(config, config["item_text"])
        check_memory_config(config)
        check_augment_config(config)

    def calculate_loss(self, interaction):
        raise RecBoleLLMError("LLMRanker is zero-shot: it has nothing to train (use epochs: 0).")

    def predict(self, interaction):
        raise RecBoleLLMError("LLMRanker scores whole candidate lists only (predict_candidates).")

    def predict_candidates(self, interaction, candidates: torch.Tensor) -> torch.Tensor:
        """Scores [users, N] of each user's candidates. Users are asked in groups of about one backend
        batch, a user's permutations side by side, so that a backend with prefix caching encodes the
        shared instructions and history once."""
        start = time.perf_counter()
        sequences = interaction[self.ITEM_SEQ].cpu().numpy()
        lengths = interaction[self.ITEM_SEQ_LEN].cpu().numpy()
        targets = interaction[self.POS_ITEM_ID].cpu().numpy()
        users = interaction[self.USER_ID].cpu().numpy()
        original = candidates.cpu().numpy()
        scores = np.empty(original.shape, dtype=float)
        group = max(1, self.users_per_call // self.bootstrap)
        histories = [self.history(s, n) for s, n in zip(sequences, lengths)]
        profiles = self.user_profiles(histories)
        recently = [self.recently(s, n) for s, n in zip(sequences, lengths)]
        bar = tqdm(total=len(original), desc="LLMRanker", unit="user", disable=not self.show_progress)
        for first in range(0, len(original), group):
            rows = range(first, min(first + group, len(original)))
            presented = [self.presented(original[r], targets[r]) for r in rows]
            orders = [self.permutations(len(original[r]), users[r]) for r in rows]
            requests = [
                RankRequest(histories[r], tuple(self.texts[i] for i in items[o]), profiles[r], recently[r])
                for r, items, user_orders in zip(rows, presented, orders)
                for o in user_orders
            ]
            answers = iter(self.mode.score(requests))
            for r, items, user_orders in zip(rows, presented, orders):
                total = np.zeros(len(items))
                for order in user_orders:
                    s = next(answers)
                    total[order] += s if self.bootstrap == 1 else borda_points(s)
                scores[r] = self.align(total, items, original[r])
            bar.update(len(rows))
        bar.close()
        self.seconds += time.perf_counter() - start
        self.users += len(original)
        return torch.from_numpy(scores).float().to(candidates.device)

    def history(self, sequence: np.ndarray, length: int, k: int | None = None) -> tuple[str, ...]:
        """Texts of the user's last `k` (default `max_his_len`) items, oldest first."""
        k = self.max_his_len if k is None else k
        return tuple(self.texts[i] for i in sequence[max(0, length - k) : length])

    def recently(self, sequence: np.ndarray, length: int) -> tuple[str, ...]:
        """Short-term memory: the last `short_term_items` item texts again, () when off."""
        return self.history(sequence, length, self.short_term) if self.short_term else ()

    def user_profiles(self, histories: list[tuple[str, ...]]) -> list[str]:
        """Each user's LLM-written profile ("" with `user_profile` off); what writing them costs counts
        in the run's requests and tokens."""
        if self.profiles is None:
            return [""] * len(histories)
        answers = self.profiles(histories)
        for answer in answers:
            self.mode.usage.add(answer.prompt_tokens, answer.output_tokens)
        return [answer.text for answer in answers]

    def presented(self, items: np.ndarray, target: int) -> np.ndarray:
        """The order shown to the LLM: the list's own, or with the ground truth at `position_probe`."""
        if self.position_probe is None or target not in items:
            return items
        others = items[items != target]
        return np.insert(others, min(int(self.position_probe), len(others)), target)

    def permutations(self, n: int, user: int) -> list[np.ndarray]:
        """The presented order first, then B-1 orders seeded by (seed, user): reruns ask the same."""
        rng = np.random.default_rng([self.seed, int(user)])
        return [np.arange(n)] + [rng.permutation(n) for _ in range(self.bootstrap - 1)]

    @staticmethod
    def align(scores: np.ndarray, presented: np.ndarray, original: np.ndarray) -> np.ndarray:
        """Scores of the presented order put back in the candidate list's own order."""
        position = {item: k for k, item in enumerate(presented)}
        return scores[[position[item] for item in original]]

    def evaluation_report(self) -> dict:
        """Cost and parse quality of the scoring since the last report, for result files and tables."""
        report = self.mode.report()
        users = max(self.users, 1)
        counts = self._cache_counts()
        hits, misses = (now - before for now, before in zip(counts, self._cache_seen))
        cached = hasattr(self.backend, "hits")
        # Cached answers cost nothing: a resumed run spreads its time over the share of users it asked,
        # and a run answered wholly from the cache measured no LLM time at all (None, not ~0).
        asked = users * misses / (hits + misses) if misses else (0 if cached and hits else users)
        report = {
            **report,
            # Calls that reached the LLM: cache hits are answers, not calls.
            "llm_calls": misses if cached else report["requests"],
            "users": self.users,
            "seconds_per_user": self.seconds / asked if asked else None,
            "tokens_per_user": (report["prompt_tokens"] + report["output_tokens"]) / users,
            **({"hits": hits, "misses": misses} if cached else {}),
        }
        self.mode.reset()
        self.seconds, self.users, self._cache_seen = 0.0, 0, counts
        return report

    def _cache_counts(self) -> tuple[int, int]:
        """(hits, misses) of the response cache so far; (0, 0) without one."""
        return getattr(self.backend, "hits", 0), getattr(self.backend, "misses", 0)
