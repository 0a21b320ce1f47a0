import pytest

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm.backend import Prompt
from recbole_llm.llm.prompts import (
    STRATEGIES,
    PromptTemplate,
    build_prompt,
    candidate_labels,
    format_candidates,
    format_history,
    load_template,
    modes,
)

HISTORY = ["Heat (1995)", "Alien (1979)", "Fargo (1996)"]
CANDIDATES = ["Toy Story (1995)", "Titanic (1997)", "Up (2009)"]
N_CANDIDATES = {"listwise": 3, "verbalizer": 3, "pointwise": 1, "pairwise": 2}


def _build(mode, strategy, history=HISTORY, overrides=None, **extra):
    titles = CANDIDATES[: N_CANDIDATES[mode]]
    template = load_template(mode, strategy, overrides)
    return build_prompt(template, strategy, history, titles, candidate_labels(len(titles)), "movies", **extra)


def test_letter_labels_go_on_past_z_like_spreadsheet_columns():
    assert candidate_labels(3) == ["A", "B", "C"]
    labels = candidate_labels(703)
    assert labels[25:28] == ["Z", "AA", "AB"]
    assert labels[51:53] == ["AZ", "BA"]
    assert labels[701:] == ["ZZ", "AAA"]
    assert len(set(labels)) == 703
    assert candidate_labels(3, "numbers") == ["1", "2", "3"]
    assert candidate_labels(0) == []


def test_unknown_label_style_is_a_user_error():
    with pytest.raises(RecBoleLLMError, match="Unknown label style 'letter'.*Did you mean: letters"):
        candidate_labels(3, "letter")


def test_history_is_numbered_oldest_first_and_candidates_sit_behind_labels():
    assert format_history(["Heat (1995)", "Alien (1979)"]) == '1. "Heat (1995)"\n2. "Alien (1979)"'
    assert format_candidates(["A", "B"], ["Up (2009)", "Cars (2006)"]) == 'A. "Up (2009)"\nB. "Cars (2006)"'
    assert format_history(["Heat (1995)"], quote=False) == "1. Heat (1995)"
    assert format_candidates(["A"], ["Up (2009)"], quote=False) == "A. Up (2009)"
    with pytest.raises(ValueError):
        format_candidates(["A"], ["Up (2009)", "Cars (2006)"])


@pytest.mark.parametrize("mode", ["listwise", "verbalizer", "pointwise", "pairwise"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_built_in_template_renders_completely(mode, strategy):
    prompt = _build(mode, strategy)
    assert isinstance(prompt, Prompt)
    assert prompt.answer_prefix == "Answer:"
    assert "{" not in prompt.user and "}" not in prompt.user
    assert prompt.system and "{" not in prompt.system
    assert "Heat (1995)" in prompt.user, "the history is shown"
    assert "Toy Story (1995)" in prompt.user, "the candidate is shown"


def test_built_in_modes_are_the_four_documented_ones():
    assert modes() == ["listwise", "pairwise", "pointwise", "verbalizer"]


def test_listwise_prompt_lists_history_in_order_and_labelled_candidates():
    user = _build("listwise", "sequential").user
    assert '1. "Heat (1995)"\n2. "Alien (1979)"\n3. "Fargo (1996)"' in user
    assert 'A. "Toy Story (1995)"\nB. "Titanic (1997)"\nC. "Up (2009)"' in user
    assert "rank these 3 movies" in user


@pytest.mark.parametrize("mode", ["listwise", "verbalizer", "pointwise", "pairwise"])
def test_recency_sentence_only_in_the_recency_focused_strategy(mode):
    sentence = 'the one I interacted with most recently is "Fargo (1996)"'
    assert sentence in _build(mode, "recency_focused").user
    assert "most recently" not in _build(mode, "sequential").user
    assert "most recently" not in _build(mode, "icl").user


@pytest.mark.parametrize("mode", ["listwise", "verbalizer", "pointwise", "pairwise"])
def test_icl_example_is_built_from_the_users_own_last_item(mode):
    user = _build(mode, "icl").user
    assert '1. "Heat (1995)"\n2. "Alien (1979)"\n' in user
    assert '3. "Fargo (1996)"' not in user, "the last item is the example's answer, not history"
    assert user.count("Fargo (1996)") == 2, "the example's answer, then 'now that I've interacted with'"
    assert 'Now that I\'ve interacted with "Fargo (1996)"' in user
    other = _build(mode, "icl", history=["Big (1988)", "Jaws (1975)"]).user
    assert other.count("Jaws (1975)") == 2 and "Fargo" not in other and '1. "Big (1988)"\n' in other


def test_pairwise_and_pointwise_fill_their_candidate_placeholders():
    pair = _build("pairwise", "sequential").user
    assert 'A. "Toy Story (1995)"\nB. "Titanic (1997)"' in pair
    point = _build("pointwise", "sequential").user
    assert 'Will I like "Toy Story (1995)"? Answer Yes or No.' in point
    template = load_template("pairwise", "sequential")
    with pytest.raises(RecBoleLLMError, match=r"'pairwise/sequential' uses the placeholder \{first\}"):
        build_prompt(template, "sequential", HISTORY, CANDIDATES, candidate_labels(3), "movies")


def test_yes_and_no_words_are_configurable():
    prompt = _build("pointwise", "sequential", overrides={"yes_word": "Oui", "no_word": "Non"})
    assert "Answer Oui or Non." in prompt.user
    template = load_template("pointwise", "sequential", {"yes_word": "Oui"})
    assert (template.yes_word, template.no_word) == ("Oui", "No")


def test_overrides_from_a_config_dict_replace_only_the_given_fields():
    overrides = {"user": "Seen: {history}\nPick from: {candidates}", "answer_prefix": "Ranking:"}
    template = load_template("listwise", "sequential", overrides)
    built_in = load_template("listwise", "sequential")
    assert template.system == built_in.system and template.fuzzy_cutoff == built_in.fuzzy_cutoff
    prompt = build_prompt(template, "sequential", HISTORY[:1], CANDIDATES[:2], ["A", "B"], "movies")
    assert prompt.user == 'Seen: 1. "Heat (1995)"\nPick from: A. "Toy Story (1995)"\nB. "Titanic (1997)"'
    assert prompt.answer_prefix == "Ranking:"
    assert _build("listwise", "sequential", overrides={"system": None}).system is None


def test_extra_fields_reach_the_template():
    prompt = _build("listwise", "sequential", overrides={"user": "{history} ({mood})"}, mood="rainy day")
    assert prompt.user.endswith("(rainy day)")


def test_unknown_override_field_names_the_close_one():
    with pytest.raises(RecBoleLLMError, match="Unknown prompt template field 'usr'.*Did you mean: user"):
        load_template("listwise", "sequential", {"usr": "x"})


def test_missing_placeholder_names_the_placeholder_and_the_template():
    template = load_template("listwise", "icl", {"user": "{history} and {genre}"})
    with pytest.raises(RecBoleLLMError) as err:
        build_prompt(template, "icl", HISTORY, CANDIDATES, candidate_labels(3), "movies")
    assert "{genre}" in str(err.value) and "listwise/icl" in str(err.value)
    with pytest.raises(RecBoleLLMError, match="literal braces"):
        PromptTemplate(user="a { b").render()


def test_unknown_mode_or_strategy_suggests_the_close_one():
    with pytest.raises(RecBoleLLMError, match="Unknown ranking mode 'listwse'.*Did you mean: listwise"):
        load_template("listwse", "sequential")
    with pytest.raises(RecBoleLLMError, match="strategy 'recency'.*Did you mean: recency_focused"):
        load_template("listwise", "recency")
    with pytest.raises(RecBoleLLMError, match="Unknown prompt strategy"):
        build_prompt(load_template("listwise", "icl"), "ICL!", HISTORY, CANDIDATES, ["A", "B", "C"], "movies")
