"""Reading rankings out of free-text LLM answers, forgivingly, and counting the answers that fail.

Small models rarely answer in the asked format, so a list-wise answer is read in segments (lines,
further split at ">", ";", "|") and each segment gives candidates by the first rule that applies.
Emphasis, backticks and double quotes are dropped first: prompts quote every title (prompts.quote_item),
and a model may echo a title with or without its quotes.

1. Leading numbering and bullets ("1.", "2)", "#3:", "-", "*") are list positions, not labels, and
   are dropped when more text follows. So with letter labels "1. B. Titanic" is B, and with number
   labels "1. 7" is 7 and "2. Heat" is the candidate titled Heat, whatever its label: a number that
   starts a line and is followed by more text is numbering; a number alone ("7", "[7]", "3 > 1") is
   a label.
2. A label at the start, followed by ".", ")", ":", "-", the segment's end, or in brackets ("B. Heat",
   "[B] Heat", "(B)"), is that candidate; the rest of the segment (its title) is not searched, so the
   ", A" of "Family Thing, A (1996)" is no label. When label and title disagree the label wins.
3. Else the segment is matched to a title: its normalised text (lower case, no punctuation, no
   trailing "(1995)", ", The" moved to the front) is at least `fuzzy_cutoff` similar to a normalised
   title (difflib ratio), or contains a title of two or more words whole (longest first).
4. Else every label token in it counts ("Answer: B, A", "C,A,B") unless it is joined by plain spaces
   to an ordinary word, so the "I" of "I think" and the "a" of "a ranking" are words, not labels.

Labels are matched in their own case; only an answer with no label in that case at all (e.g.
"b > a > c") is read case-insensitively. Repeats keep their first place; invented labels and titles
are ignored. Candidates the answer never mentions are left out of `order` and score below all
mentioned ones (pessimistic: a model gains nothing from leaving candidates out). An answer counts as
malformed only when it names no candidate at all; partial answers are not malformed, and ParseStats
reports the share of candidates recovered so that partial answers remain visible.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from recbole_llm.llm.prompts import DOUBLE_QUOTES

_SEGMENT_SPLIT = re.compile(r"[\n>→;|]")
_NUMBERING = re.compile(r"^\s*(?:[-•]\s*)*(?:(?:#\s*)?\d+\s*[.):]|\(\d+\))\s*(?=\S)")
_BRACKETED_HEAD = re.compile(r"^\s*[\[(<]\s*([^\W_]+)\s*[\])>]")
_PLAIN_HEAD = re.compile(r"^\s*([^\W_]+)\s*(?:[.):\-–]|$)")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_YEAR = re.compile(r"\(\s*\d{4}\s*\)\s*$")
_ARTICLE = re.compile(r"^(.*), (the|a|an)$")
_MARKUP = str.maketrans("", "", "*`" + DOUBLE_QUOTES)  # emphasis, code and the quotes around titles
_JOINING = str.maketrans("", "", "'" + DOUBLE_QUOTES)  # "Schindler's", and Say"Hi" shown as Say'Hi'


@dataclass
class ParseResult:
    """Candidate indices in the answer's order (no repeats); `by_title` of them were found by title."""

    order: list[int]
    by_title: int = 0

    @property
    def n_recovered(self) -> int:
        return len(self.order)

    @property
    def malformed(self) -> bool:
        """Nothing usable in the answer (empty, or no candidate named)."""
        return not self.order


def parse_ranking(text: str, labels: list[str], titles: list[str], fuzzy_cutoff: float = 0.85) -> ParseResult:
    """The candidates an answer ranks, best first, by the rules in the module docstring."""
    text = text.translate(_MARKUP)
    index = _Titles(titles, fuzzy_cutoff)
    result, label_hits = _parse(text, _finder(labels, fold=False), index)
    if label_hits == 0:
        result, _ = _parse(text, _finder(labels, fold=True), index)
    return result


def parse_choice(text: str, labels: list[str]) -> int | None:
    """Index of the label that a pair-wise answer names first ("B", "Answer: [B]", "B is better"), in its
    own case if any label appears so, else case-insensitively; None if it names none. Any standalone
    label token counts, so an answer opening with the article "A" reads as label A."""
    tokens = _TOKEN.findall(text)
    for fold in (False, True):
        find = _finder(labels, fold)
        for token in tokens:
            if (index := find(token)) is not None:
                return index
    return None


def scores_from_order(order: list[int], n: int) -> np.ndarray:
    """Scores for n candidates: n, n-1, ... down the order; 0 (below all of them) for the unmentioned.

    Ties are broken against the model at evaluation, so an unmentioned candidate never outranks the
    others for free; finite scores keep sums over several answers (bootstrapping) meaningful.
    """
    scores = np.zeros(n)
    scores[order] = np.arange(n, n - len(order), -1, dtype=float)
    return scores


class ParseStats:
    """Answer-format health of a run: how often parsing found nothing, and how much it found."""

    def __init__(self):
        self.answers = self.malformed = self.recovered = self.candidates = 0

    def add(self, result: ParseResult, n_candidates: int) -> None:
        self.answers += 1
        self.malformed += result.malformed
        self.recovered += result.n_recovered
        self.candidates += n_candidates

    def as_dict(self) -> dict:
        """`parse_failure_rate`: share of malformed answers; `mean_recovered`: share of the asked
        candidates that answers ranked (1.0: every answer ranked all of its candidates). 0.0 when empty."""
        return {
            "answers": self.answers,
            "parse_failure_rate": self.malformed / max(self.answers, 1),
            "mean_recovered": self.recovered / max(self.candidates, 1),
        }


def _finder(labels: list[str], fold: bool) -> Callable[[str], int | None]:
    """Token -> candidate index, exact or case-insensitive."""
    if not fold:
        return {label: i for i, label in enumerate(labels)}.get
    index = {label.lower(): i for i, label in enumerate(labels)}
    return lambda token: index.get(token.lower())


def _parse(text: str, find: Callable[[str], int | None], titles: _Titles) -> tuple[ParseResult, int]:
    """The result, and how many segments gave labels (as opposed to titles). Each distinct segment is
    read once: small models often repeat themselves until they run out of tokens."""
    result, label_hits = ParseResult([]), 0
    readings: dict[str, tuple[list[int], bool]] = {}
    for segment in _SEGMENT_SPLIT.split(text):
        if segment not in readings:
            readings[segment] = _read(segment, find, titles)
        found, from_title = readings[segment]
        label_hits += bool(found) and not from_title
        for index in found:
            if index not in result.order:
                result.order.append(index)
                result.by_title += from_title
    return result, label_hits


def _read(segment: str, find: Callable[[str], int | None], titles: _Titles) -> tuple[list[int], bool]:
    """The candidates one segment gives, and whether by title (rules 1-4 of the module docstring)."""
    segment = _NUMBERING.sub("", segment, count=1)
    head = _BRACKETED_HEAD.match(segment) or _PLAIN_HEAD.match(segment)
    if head and (index := find(head.group(1))) is not None:
        return [index], False
    if (index := titles.match(segment)) is not None:
        return [index], True
    return _scan(segment, find), False


def _normalise(title: str) -> str:
    """Lower case, no trailing year, "Matrix, The" -> "the matrix", punctuation as spaces."""
    title = _YEAR.sub("", title.strip()).strip().lower()
    title = _ARTICLE.sub(r"\2 \1", title)
    return " ".join(_TOKEN.findall(title.translate(_JOINING)))


class _Titles:
    """The candidates' normalised titles, each with a difflib matcher built once per answer, and only
    for an answer that has a segment without a label (building them is the costly part); each
    distinct segment text is matched once (repeats, and the second, case-insensitive pass, cost nothing)."""

    def __init__(self, titles: list[str], cutoff: float):
        self.keys = [_normalise(t) for t in titles]
        self.cutoff = cutoff
        self.seen: dict[str, int | None] = {"": None}

    @cached_property
    def matchers(self) -> list[difflib.SequenceMatcher]:
        return [difflib.SequenceMatcher(None, b=key) for key in self.keys]

    def match(self, segment: str) -> int | None:
        """Rule 3 of the module docstring: the most similar title, else the longest one contained."""
        text = _normalise(segment)
        if text not in self.seen:
            self.seen[text] = self._closest(text)
        return self.seen[text]

    def _closest(self, text: str) -> int | None:
        ratios = [self._similarity(matcher, text) for matcher in self.matchers]
        if ratios and max(ratios) >= self.cutoff:
            return ratios.index(max(ratios))
        padded = f" {text} "
        contained = [i for i, key in enumerate(self.keys) if " " in key and f" {key} " in padded]
        return max(contained, key=lambda i: len(self.keys[i]), default=None)

    def _similarity(self, matcher: difflib.SequenceMatcher, text: str) -> float:
        """difflib's ratio, or 0.0 when its cheap upper bounds are below the cutoff already (as in
        difflib.get_close_matches): a long line would otherwise cost time quadratic in its length."""
        matcher.set_seq1(text)
        if matcher.real_quick_ratio() < self.cutoff or matcher.quick_ratio() < self.cutoff:
            return 0.0
        return matcher.ratio()


def _scan(segment: str, find: Callable[[str], int | None]) -> list[int]:
    """Label tokens of a segment, except those joined by plain spaces to an ordinary word."""
    tokens = list(_TOKEN.finditer(segment))

    def is_word(j: int) -> bool:
        return 0 <= j < len(tokens) and find(tokens[j].group()) is None and not tokens[j].group().isdigit()

    def spaced(start: int, end: int) -> bool:
        return segment[start:end].isspace()

    found = []
    for j, token in enumerate(tokens):
        index = find(token.group())
        if index is None:
            continue
        if is_word(j - 1) and spaced(tokens[j - 1].end(), token.start()):
            continue
        if is_word(j + 1) and spaced(token.end(), tokens[j + 1].start()):
            continue
        found.append(index)
    return found
