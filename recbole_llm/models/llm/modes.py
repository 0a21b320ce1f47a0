"""The four ways an LLM turns (history, candidate list) into one score per candidate.

- `listwise`: the LLM writes a ranking of labelled candidates; parsed forgivingly (Hou et al. 2024).
  With `listwise_inference: first_label` nothing is generated: a candidate's score is the logit of its
  label as the answer's first token, one forward per list (FIRST, Reddy et al. 2024), which is what
  ALRO's soft lambda loss and the SFT loss's first answer token train.
- `verbalizer`: one forward pass; a candidate's score is the next-token logit of its label (LlamaRec).
- `pointwise`: one yes/no question per candidate; score = logit(yes) - logit(no), i.e. log-odds of
  P(yes) between the two answers (TALLRec).
- `pairwise`: the LLM picks the better of two candidates; a candidate's score is its number of wins.

Candidates a mode cannot place (unparsed, unmentioned) share the lowest score; the evaluator breaks
ties against the model, so they never win.
"""

from __future__ import annotations

import abc
import itertools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from recbole_llm.errors import RecBoleLLMError, did_you_mean
from recbole_llm.llm.backend import Backend, UnsupportedRequest
from recbole_llm.llm.memory import memory_fields
from recbole_llm.llm.parsing import ParseResult, ParseStats, parse_choice, parse_ranking, scores_from_order
from recbole_llm.llm.prompts import build_prompt, candidate_labels, load_template


@dataclass(frozen=True)
class RankRequest:
    """One list to rank: the user's history and the candidates, as item texts in presented order, and
    the user's memory (recbole_llm/llm/memory.py): a profile and the last few items, empty when off."""

    history: tuple[str, ...]
    candidates: tuple[str, ...]
    profile: str = ""
    recently: tuple[str, ...] = ()


@dataclass
class Usage:
    """Cost of a run, summed over every prompt answered (cache hits included: what the ranking costs)."""

    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0

    def add(self, prompt_tokens: int, output_tokens: int = 0) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.output_tokens += output_tokens


class RankingMode(abc.ABC):
    name: ClassVar[str]

    def __init__(self, backend: Backend, config):
        self.backend = backend
        self.strategy = config["prompt_strategy"]
        self.domain = config["domain"]
        self.label_style = config["label_style"]
        self.max_new_tokens = config["max_new_tokens"]
        self.quote = config["quote_item_text"]
        self.template = load_template(self.name, self.strategy, config["prompt_template"])
        self.reset()

    def reset(self) -> None:
        self.usage = Usage()
        self.parse_stats = ParseStats()

    def prompt(self, request: RankRequest, shown: list[str] | None = None):
        """The prompt for `request`, showing `shown` (default: all its candidates), labelled."""
        shown = list(request.candidates) if shown is None else shown
        labels = candidate_labels(len(shown), self.label_style)
        history = list(request.history)
        memory = memory_fields(request.profile, request.recently, self.quote)
        return build_prompt(
            self.template, self.strategy, history, shown, labels, self.domain, self.quote, **memory
        )

    @abc.abstractmethod
    def score(self, requests: list[RankRequest]) -> list[np.ndarray]:
        """One float array per request, aligned with its candidates."""

    def label_scores(self, requests: list[RankRequest]) -> list[np.ndarray]:
        """Per request, the next-token logit of each candidate's label after its prompt: one forward
        per prompt, batched over requests with as many candidates."""
        by_size: dict[int, list[int]] = {}
        for i, r in enumerate(requests):
            by_size.setdefault(len(r.candidates), []).append(i)
        results: dict[int, np.ndarray] = {}
        for n, indices in by_size.items():
            labels = candidate_labels(n, self.label_style)
            prompts = [self.prompt(requests[i]) for i in indices]
            for i, answer in zip(indices, self.backend.label_logits(prompts, labels)):
                self.usage.add(answer.prompt_tokens)
                results[i] = np.asarray(answer.logits, dtype=float)
        return [results[i] for i in range(len(requests))]

    def report(self) -> dict:
        """Cost, and parse statistics where answers were generated and parsed."""
        parsed = self.parse_stats.as_dict() if self.parse_stats.answers else {}
        return {
            "requests": self.usage.calls,  # prompts answered, from the cache or by the LLM
            "prompt_tokens": self.usage.prompt_tokens,
            "output_tokens": self.usage.output_tokens,
            **parsed,
        }


class Listwise(RankingMode):
    name = "listwise"

    def __init__(self, backend, config):
        super().__init__(backend, config)
        self.first_label = config["listwise_inference"] == "first_label"
        if self.first_label and type(backend).label_logits is Backend.label_logits:
            raise RecBoleLLMError(
                f"listwise_inference: first_label reads label logits, which the {backend.kind} backend "
                "cannot: set listwise_inference: generate, or use the hf or vllm backend."
            )

    def score(self, requests):
        if self.first_label:
            return self.label_scores(requests)
        answers = self.backend.generate([self.prompt(r) for r in requests], self.max_new_tokens)
        out = []
        for request, answer in zip(requests, answers):
            self.usage.add(answer.prompt_tokens, answer.output_tokens)
            ls = candidate_labels(len(request.candidates), self.label_style)
            parsed = parse_ranking(answer.text, ls, list(request.candidates), self.template.fuzzy_cutoff)
            self.parse_stats.add(parsed, len(ls))
            out.append(np.asarray(scores_from_order(parsed.order, len(ls)), dtype=float))
        return out


class Verbalizer(RankingMode):
    name = "verbalizer"

    def score(self, requests):
        return self.label_scores(requests)


class Pointwise(RankingMode):
    name = "pointwise"

    def score(self, requests):
        prompts = [self.prompt(r, [item]) for r in requests for item in r.candidates]
        logits = self.backend.label_logits(prompts, [self.template.yes_word, self.template.no_word])
        for answer in logits:
            self.usage.add(answer.prompt_tokens)
        yes_minus_no = np.asarray([a.logits[0] - a.logits[1] for a in logits], dtype=float)
        bounds = np.cumsum([0, *(len(r.candidates) for r in requests)])
        return [yes_minus_no[a:b] for a, b in itertools.pairwise(bounds)]


class Pairwise(RankingMode):
    """Every pair (or pairs within `pairwise_window` of each other in the list), asked once each, the
    candidate shown first alternating so that position bias cancels over pairs."""

    name = "pairwise"

    def __init__(self, backend, config):
        super().__init__(backend, config)
        self.window = config["pairwise_window"]

    def pairs(self, n: int) -> list[tuple[int, int]]:
        window = self.window or n
        pairs = [(i, j) for i, j in itertools.combinations(range(n), 2) if j - i <= window]
        return [(j, i) if k % 2 else (i, j) for k, (i, j) in enumerate(pairs)]

    def score(self, requests):
        labels = candidate_labels(2, self.label_style)
        asked = [(r, self.pairs(len(r.candidates))) for r in requests]
        prompts = [self.prompt(r, [r.candidates[i], r.candidates[j]]) for r, pairs in asked for i, j in pairs]
        winners = self._first_wins(prompts, labels)
        out, k = [], 0
        for r, pairs in asked:
            wins = np.zeros(len(r.candidates))
            for i, j in pairs:
                if winners[k] is not None:
                    wins[i if winners[k] else j] += 1
                k += 1
            out.append(wins)
        return out

    def _first_wins(self, prompts, labels) -> list[bool | None]:
        """Per prompt: True if the first candidate wins, False if the second, None if unparsable."""
        try:
            logits = self.backend.label_logits(prompts, labels)
        except UnsupportedRequest:  # a backend without logits: read the generated label instead
            answers = self.backend.generate(prompts, self.max_new_tokens)
            for a in answers:
                self.usage.add(a.prompt_tokens, a.output_tokens)
            choices = [parse_choice(a.text, labels) for a in answers]
            for c in choices:  # naming the winner orders both candidates; naming none is malformed
                self.parse_stats.add(ParseResult([] if c is None else [c, 1 - c]), len(labels))
            return [None if c is None else c == 0 for c in choices]
        for a in logits:
            self.usage.add(a.prompt_tokens)
        return [a.logits[0] > a.logits[1] if a.logits[0] != a.logits[1] else None for a in logits]


MODES: dict[str, type[RankingMode]] = {m.name: m for m in (Listwise, Verbalizer, Pointwise, Pairwise)}
LISTWISE_INFERENCE = ("generate", "first_label")


def check_mode_config(config) -> None:
    """Fail on an unknown mode, strategy, label style or template field before anything is loaded."""
    name = config["ranking_mode"]
    if name not in MODES:
        raise RecBoleLLMError(
            f"Unknown ranking_mode {name!r}; choose from {', '.join(MODES)}." + did_you_mean(str(name), MODES)
        )
    inference = config["listwise_inference"]
    if inference not in LISTWISE_INFERENCE:
        raise RecBoleLLMError(
            f"Unknown listwise_inference {inference!r}; choose generate (write the ranking, then parse it) "
            "or first_label (rank by the label logits at the answer's first token, one forward)."
            + did_you_mean(str(inference), LISTWISE_INFERENCE)
        )
    load_template(name, config["prompt_strategy"], config["prompt_template"])
    candidate_labels(1, config["label_style"])


def make_mode(backend: Backend, config) -> RankingMode:
    check_mode_config(config)
    return MODES[config["ranking_mode"]](backend, config)
