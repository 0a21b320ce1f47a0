import time

import numpy as np
import pytest

from recbole_llm.llm.parsing import ParseResult, ParseStats, parse_choice, parse_ranking, scores_from_order
from recbole_llm.llm.prompts import candidate_labels, quote_item

LABELS = ["A", "B", "C", "D", "E"]
TITLES = [
    "Toy Story (1995)",
    "Titanic (1997)",
    "Heat (1995)",
    "American President, The (1995)",
    "Family Thing, A (1996)",
]


def order(text, labels=LABELS, titles=TITLES):
    return parse_ranking(text, labels, titles).order


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("C > A > B", [2, 0, 1]),
        ("C>A>B>E>D", [2, 0, 1, 4, 3]),
        ("Answer: B, A", [1, 0]),
        ("C,A,B", [2, 0, 1]),
        ("[B] > [E] > (D)", [1, 4, 3]),
        ("1) C\n2) A\n3) E", [2, 0, 4]),
        ("A. Toy Story (1995)\nB. Titanic (1997)", [0, 1]),
        ("1. B. Titanic (1997)\n2. A. Toy Story (1995)\n3. C. Heat (1995)", [1, 0, 2]),
        ("**1.** **D.** The American President\n**2.** `A`", [3, 0]),
        ("- E: Family Thing\n- C - Heat", [4, 2]),
        ("B\nD\nA", [1, 3, 0]),
        ("Ranking: C > A > B\nThis ranking is based on your history.", [2, 0, 1]),
    ],
)
def test_labels_in_many_answer_formats(text, expected):
    assert order(text) == expected


def test_chatter_before_and_after_the_ranking_is_ignored():
    text = (
        "Sure! Based on your history, here is a ranking of the 5 movies:\n"
        "1. D. American President, The (1995)\n2. B. Titanic (1997)\n"
        "I hope this helps! Let me know if you need anything else."
    )
    assert order(text) == [3, 1]


def test_english_words_that_look_like_labels_stay_words():
    ten = candidate_labels(10)
    titles = [f"Film {i}" for i in range(10)]
    assert order("I ranked them as follows: C > A > B", ten, titles) == [2, 0, 1], "'I' is a word"
    assert order("A good ranking would be: C > B", ten, titles) == [2, 1], "'A' is an article"
    assert order("here is a ranking: b, a, c", ten, titles) == [1, 0, 2], "lower-case 'a' article"


def test_lowercase_labels_are_read_when_the_answer_has_no_capital_label():
    assert order("b > a > c") == [1, 0, 2]
    assert order("1. d. the american president\n2. e") == [3, 4]


def test_repeats_keep_their_first_place_and_invented_labels_are_dropped():
    assert order("B > A > B > C > A") == [1, 0, 2]
    assert order("Q > B > Z > A > F") == [1, 0], "only A-E exist"
    assert order("1. Q. Heat\n2. B") == [1], "a line led by an invented label is not searched further"


def test_invented_titles_are_ignored():
    text = "1. The Matrix (1999)\n2. Heat (1995)\n3. Jurassic Park (1993)"
    assert order(text) == [2]


def test_titles_without_labels_are_matched_forgivingly():
    text = "Titanc (1997)\nthe american president\nToy Story\nHEAT"
    result = parse_ranking(text, LABELS, TITLES)
    assert result.order == [1, 3, 0, 2]
    assert result.by_title == 4
    assert order("My top pick is The American President (1995), for sure") == [3], "a title inside prose"


def test_titles_are_read_with_or_without_the_quotes_the_prompt_puts_around_them():
    assert order('1. C. "Heat (1995)"\n2. "Titanic (1997)"\n3. \u201cToy Story\u201d') == [2, 1, 0]
    assert order('"B" > "A" > "E"') == [1, 0, 4]
    assert order('"American President, The (1995)" > Heat') == [3, 2]


def test_every_title_as_the_prompt_quotes_it_is_read_back():
    titles = ['Say "Hi" (2001)', 'Ten"Four (1999)', "Schindler's List (1993)", "Heat\n(1995)", "Up (2009)"]
    shown = [quote_item(t) for t in titles]
    assert order("\n".join(reversed(shown)), LABELS, titles) == [4, 3, 2, 1, 0]
    assert order("\n".join(t.replace("\n", " ") for t in titles), LABELS, titles) == [0, 1, 2, 3, 4], (
        "unquoted"
    )


def test_an_answer_that_repeats_itself_is_read_once_per_distinct_line():
    """Small models loop until the token budget ends; each repeat used to be matched against every
    title again (2.5 s for this answer)."""
    text = "Titanc (1997) > the heat of it > " * 3000 + "\nC"
    start = time.perf_counter()
    result = parse_ranking(text, LABELS, TITLES)
    assert time.perf_counter() - start < 0.5
    assert result.order == [1, 2] and result.by_title == 1


def test_a_trailing_article_in_a_title_is_not_a_label():
    assert order("Family Thing, A (1996)\nHeat (1995)") == [4, 2]


def test_the_rest_of_a_labelled_line_is_its_title_not_more_labels():
    titles = ["Toy Story (1995)", "E.T. (1982)", "Heat (1995)", "Up (2009)", "Big (1988)"]
    assert order("1. B. E.T.\n2. A. Toy Story", LABELS, titles) == [1, 0]


def test_a_label_wins_over_a_title_that_disagrees():
    assert order("A. Heat (1995)") == [0]
    assert order("A. The American President (1995)") == [0], "even a title close enough to match"


def test_fuzzy_cutoff_bounds_title_matching():
    assert parse_ranking("Titanc", LABELS, TITLES).order == [1]
    assert parse_ranking("Titanc", LABELS, TITLES, fuzzy_cutoff=0.95).order == []


def test_number_labels_tell_numbering_from_labels():
    labels = candidate_labels(10, "numbers")
    names = ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliet"]
    titles = [f"Movie {name}" for name in names]
    assert order("1. 7\n2. 3\n3. 10", labels, titles) == [6, 2, 9], "a number after numbering is a label"
    assert order("1. Movie India\n2. Movie Bravo", labels, titles) == [8, 1], "numbering before a title"
    assert order("3 > 1 > 2", labels, titles) == [2, 0, 1]
    assert order("[3] > [1]", labels, titles) == [2, 0]
    assert order("7.\n3.", labels, titles) == [6, 2], "a number alone is a label"
    assert order("5, 2, 11", labels, titles) == [4, 1], "11 is not a label"
    assert order("Top 3: 5, 2", labels, titles) == [4, 1], "a number joined to a word is not a label"


def test_labels_beyond_z():
    labels = candidate_labels(30)
    titles = [f"Item {i}" for i in range(30)]
    assert order("AB > AA > Z > B", labels, titles) == [27, 26, 25, 1]
    assert order("ad, ac", labels, titles) == [29, 28]


def test_empty_or_garbage_answers_are_malformed_and_partial_ones_are_not():
    for text in ["", "   \n", "I cannot help with that request.", "Q > R > S"]:
        result = parse_ranking(text, LABELS, TITLES)
        assert result.malformed and result.order == [] and result.n_recovered == 0
    partial = parse_ranking("B > D", LABELS, TITLES)
    assert not partial.malformed and partial.n_recovered == 2


def test_choice_is_the_first_label_named():
    labels = ["A", "B"]
    assert parse_choice("B", labels) == 1
    assert parse_choice(" Answer: [B]", labels) == 1
    assert parse_choice("B is better than A.", labels) == 1
    assert parse_choice("**A**", labels) == 0
    assert parse_choice("b", labels) == 1
    assert parse_choice("I'd say b, it is a better fit", labels) == 1, "lower-case only without capitals"
    assert parse_choice("Neither of them.", labels) is None
    assert parse_choice("", labels) is None
    assert parse_choice("2", ["1", "2"]) == 1


def test_unmentioned_candidates_score_below_every_mentioned_one():
    scores = scores_from_order([2, 0], 4)
    assert scores.tolist() == [3.0, 0.0, 4.0, 0.0]
    assert np.argsort(-scores, kind="stable")[:2].tolist() == [2, 0]
    full = scores_from_order([1, 3, 0, 2], 4)
    assert full.tolist() == [2.0, 4.0, 1.0, 3.0]
    assert scores_from_order([], 3).tolist() == [0.0, 0.0, 0.0]


def test_parse_stats_count_failures_and_recovered_candidates():
    stats = ParseStats()
    assert stats.as_dict() == {"answers": 0, "parse_failure_rate": 0.0, "mean_recovered": 0.0}
    for text in ["C > A > B > E > D", "B", "nothing useful"]:
        stats.add(parse_ranking(text, LABELS, TITLES), len(LABELS))
    stats.add(ParseResult([0]), 2)
    got = stats.as_dict()
    assert got["answers"] == 4
    assert got["parse_failure_rate"] == pytest.approx(1 / 4)
    assert got["mean_recovered"] == pytest.approx((5 + 1 + 0 + 1) / (5 + 5 + 5 + 2))
