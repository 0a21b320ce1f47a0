"""Fuzzing the answer readers with generated LLM outputs: arbitrary unicode, answers assembled from
labels, titles, separators and numbering mixed with noise, very long, empty or blank answers, labels
beyond the candidate count, mixed case. 10,000 examples in all, derandomized so CI sees the same ones.

Properties: no exception; an order without repeats and with valid indices only; every answer that
names no candidate counted as malformed by the mode that read it; a well-formed answer read back
exactly."""

import random
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recbole_llm.llm.backend import Backend, Completion
from recbole_llm.llm.parsing import parse_choice, parse_ranking
from recbole_llm.llm.prompts import candidate_labels
from recbole_llm.models.llm.modes import Listwise, Pairwise, RankRequest


def fuzz(examples: int) -> settings:
    """The same examples on every run (derandomized, no example database); no deadline, so that a
    loaded machine fails nothing."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Distinct real titles, none of which starts like a label line ("E.T." would read as label E).
POOL = [
    "Toy Story (1995)",
    "GoldenEye (1995)",
    "Four Rooms (1995)",
    "Get Shorty (1995)",
    "Copycat (1995)",
    "Twelve Monkeys (1995)",
    "Babe (1995)",
    "Dead Man Walking (1995)",
    "Richard III (1995)",
    "Seven (Se7en) (1995)",
    "Usual Suspects, The (1995)",
    "Mighty Aphrodite (1995)",
    "Postino, Il (1994)",
    "Mr. Holland's Opus (1995)",
    "French Twist (Gazon maudit) (1995)",
    "From Dusk Till Dawn (1996)",
    "White Balloon, The (1995)",
    "Antonia's Line (1995)",
    "Angels and Insects (1995)",
    "Muppet Treasure Island (1996)",
    "Braveheart (1995)",
    "Taxi Driver (1976)",
    "Rumble in the Bronx (1995)",
    "Birdcage, The (1996)",
    "Brothers McMullen, The (1995)",
    "Bad Boys (1995)",
    "Apollo 13 (1995)",
    "Batman Forever (1995)",
    "Belle de jour (1967)",
    "Crimson Tide (1995)",
]
SEPARATORS = [" > ", ">", ",", ", ", "\n", "\r\n", ";", "|", " ", "→", "\t", ". ", ") ", ": ", "\u2028"]
MARKUP = ["1.", "2)", "#3:", "- ", "* ", "(4)", "**", "`", '"', "\u201c", "[", "]", "(", ")", "Answer:", "I"]
STYLES = st.sampled_from(["letters", "numbers"])
# All of unicode but surrogates, as st.text's default but without its slow set-up (a utf-8 codec scan).
UNICODE = st.characters(exclude_categories=["Cs"])
NO_ALNUM = st.text(st.characters(exclude_categories=["Cs", "L", "N"]), max_size=30)

# Strategies are built once, here: building them per example would cost more than the parsing, and
# so would many small draws. An answer is drawn as a recipe (kind, content, repeats) that `answer` turns
# into text for a given list; "pieces" are bytes that pick words (see `assemble`) and a noise string.
PIECES = st.tuples(st.binary(max_size=24), st.text(UNICODE, max_size=24))
RECIPES = st.one_of(
    st.tuples(st.just("pieces"), PIECES, st.just(1)),
    st.tuples(st.just("pieces"), PIECES, st.integers(5, 20)),  # long, many segments
    st.tuples(st.just("text"), st.text(UNICODE, max_size=60), st.just(1)),  # arbitrary unicode
    st.tuples(st.just("text"), st.sampled_from(["", " ", "\n\n", "\t\u3000\xa0\u2028"]), st.just(1)),  # blank
    # long, one line
    st.tuples(st.just("text"), st.text(UNICODE, min_size=1, max_size=10), st.integers(200, 1000)),
)


def vocabulary(labels: list[str], titles: list[str]) -> list[str]:
    """The list's labels in both cases, labels past its end, its titles with and without quotes,
    separators and numbering."""
    beyond = candidate_labels(len(labels) + 30, "letters")[len(labels) :] + [str(len(labels) + 1), "0"]
    lower = [label.lower() for label in labels]
    return [*labels, *lower, *beyond, *titles, *(f'"{t}"' for t in titles), *SEPARATORS, *MARKUP]


def assemble(picks: bytes, noise: str, words: list[str]) -> str:
    """Each byte picks a word, or (one in four) the next one to four characters of the noise."""
    out = []
    for b in picks:
        if b < 192:
            out.append(words[b % len(words)])
        else:
            out.append(noise[: b % 4 + 1])
            noise = noise[b % 4 + 1 :]
    return "".join(out)


def answer(recipe: tuple, labels: list[str], titles: list[str]) -> str:
    kind, content, repeats = recipe
    if kind == "pieces":
        content = assemble(*content, vocabulary(labels, titles))
    return content * repeats


def titles_from(start: int, n: int) -> list[str]:
    return (POOL * 2)[start : start + n]


@st.composite
def candidate_lists(draw, max_size: int = 30):
    """(labels, titles) of a list: letter or number labels, real titles and one of arbitrary text."""
    n, where = draw(st.integers(1, max_size)), draw(st.integers(0, len(POOL) ** 2 - 1))
    titles = titles_from(where % len(POOL), n)
    titles[where // len(POOL) % n] = draw(st.text(UNICODE, max_size=20))
    return candidate_labels(n, draw(STYLES)), titles


def assert_valid_order(order: list[int], n: int) -> None:
    assert all(isinstance(i, int) and 0 <= i < n for i in order), order
    assert len(set(order)) == len(order), order


@fuzz(3500)
@given(candidate_lists(), RECIPES)
def test_any_answer_gives_an_order_of_distinct_valid_candidates(candidates, recipe):
    labels, titles = candidates
    text = answer(recipe, labels, titles)
    result = parse_ranking(text, labels, titles)
    assert_valid_order(result.order, len(labels))
    assert result.malformed == (result.order == [])
    assert 0 <= result.by_title <= len(result.order)
    if not any(c.isalnum() for c in text):
        assert result.malformed, "no letter or digit, so no label and no title"


@fuzz(1500)
@given(
    st.integers(1, 60),
    STYLES,
    st.integers(0, 2**32),
    st.sampled_from([(before, after) for before in ["", "Answer: ", " "] for after in ["", "\n", " ", "."]]),
)
def test_a_permutation_of_labels_is_read_back_exactly(n, style, seed, around):
    before, after = around
    labels = candidate_labels(n, style)
    perm = random.Random(seed).sample(range(n), n)
    titles = [f"Film number {i}" for i in range(n)]
    text = before + " > ".join(labels[i] for i in perm) + after
    assert parse_ranking(text, labels, titles).order == perm


@fuzz(1500)
@given(
    st.integers(2, 30),
    STYLES,
    st.text(UNICODE, max_size=60),
    NO_ALNUM,
    st.integers(0, 59),
)
def test_a_choice_is_a_valid_label_or_none(n, style, text, padding, pick):
    labels = candidate_labels(n, style)
    choice = parse_choice(text, labels)
    assert choice is None or 0 <= choice < n
    if not any(c.isalnum() for c in text):
        assert choice is None
    k, label = pick % n, labels[pick % n].lower() if pick >= 30 else labels[pick % n]
    middle = len(padding) // 2
    assert parse_choice(padding[:middle] + label + padding[middle:], labels) == k, "a label amid punctuation"


@dataclass
class Scripted(Backend):
    """Answers prompts with the given texts in turn; no logits, as a chat API."""

    kind = "scripted"
    model_id: str = "scripted"
    texts: tuple[str, ...] = ()

    def generate(self, prompts, max_new_tokens, on_result=None):
        assert len(prompts) == len(self.texts)
        return [Completion(text, 1, 1) for text in self.texts]


def mode(cls, texts: list[str], label_style: str = "letters"):
    config = {
        "prompt_strategy": "sequential",
        "domain": "movies",
        "label_style": label_style,
        "max_new_tokens": 8,
        "prompt_template": {},
        "quote_item_text": True,
        "pairwise_window": None,
        "listwise_inference": "generate",
    }
    return cls(Scripted(texts=tuple(texts)), config)


@fuzz(1250)
@given(
    STYLES,
    st.lists(st.tuples(st.integers(1, 12), st.integers(0, len(POOL) - 1), RECIPES), min_size=1, max_size=2),
)
def test_listwise_counts_every_answer_that_names_no_candidate(style, lists):
    titles = [titles_from(start, n) for n, start, _ in lists]
    texts = [answer(recipe, candidate_labels(len(t), style), t) for t, (*_, recipe) in zip(titles, lists)]
    listwise = mode(Listwise, texts, style)
    scores = listwise.score([RankRequest(("Heat (1995)",), tuple(t)) for t in titles])
    for t, text, s in zip(titles, texts, scores):
        assert s.shape == (len(t),) and np.isfinite(s).all()
        assert_valid_order(np.argsort(-s, kind="stable")[: int((s > 0).sum())].tolist(), len(t))
        if not any(c.isalnum() for c in text):
            assert not s.any()
    stats = listwise.parse_stats
    assert stats.answers == len(texts)
    assert stats.malformed == sum(not s.any() for s in scores), "malformed exactly when nothing is placed"


@fuzz(1250)
@given(st.integers(2, 3), st.lists(RECIPES, min_size=3, max_size=3))
def test_pairwise_counts_every_answer_that_names_neither_candidate(n, recipes):
    pairs = n * (n - 1) // 2
    texts = [answer(r, ["A", "B"], POOL[:2]) for r in recipes[:pairs]]
    pairwise = mode(Pairwise, texts)
    (wins,) = pairwise.score([RankRequest(("Heat (1995)",), tuple(POOL[:n]))])
    stats = pairwise.parse_stats
    assert stats.answers == pairs
    assert wins.sum() + stats.malformed == pairs, "each answer gives one win or counts as malformed"
    assert stats.malformed >= sum(not any(c.isalnum() for c in t) for t in texts)
    assert pairwise.report()["parse_failure_rate"] == stats.malformed / pairs
