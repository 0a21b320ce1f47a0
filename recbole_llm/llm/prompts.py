"""Prompt templates for zero-shot LLM ranking, kept in YAML so users change wording without code.

Modes follow Hou et al. 2024 ("Large Language Models are Zero-Shot Rankers for Recommender Systems")
and the ALRO list-wise prompt: `listwise` (the answer lists candidate labels, best first),
`verbalizer` (the answer prefix ends right before the best candidate's label; label logits score all
candidates in one pass), `pointwise` (a yes/no question per candidate) and `pairwise` (the answer is
the label of the preferred one of two). Strategies change how the history is presented:
`sequential` (oldest first), `recency_focused` (also names the most recent item) and `icl` (an
in-context example built from the user's own history: all but the last item, "then you should
recommend <last>", and the candidates come after "now that I've interacted with <last>").

Layout: `properties/prompts/<mode>.yaml` maps `defaults` and each strategy to template fields
(`system`, `user`, `answer_prefix`, and the settings of PromptTemplate). A template is `defaults`,
then the strategy's entry, then the user's overrides; `profile.yaml` and `augment.yaml` (TASKS: texts
that memory.py and augment.py ask the LLM to write) hold one flat set of fields. Texts are str.format
strings (write literal braces as {{ }}); `build_prompt` fills:

  {history}     numbered history titles, oldest first ('1. "Heat (1995)"'); for `icl` all but the last
  {recent}      title of the most recent history item
  {candidates}  labelled candidates ('A. "Toy Story (1995)"'), one a line
  {n}           number of candidates
  {domain}      plural noun of the items ("movies", "products")
  {item}        the only candidate's title (point-wise: exactly one candidate)
  {first}       the first and second labelled candidate (pair-wise: exactly two candidates)
  {second}
  {yes} {no}    the template's yes_word and no_word
  {profile}     memory (recbole_llm/llm/memory.py): the line "My taste: <LLM-written profile>" and a line
  {recently}    break, or "" when `user_profile` is off; likewise "Most recently: <last k titles>"
                (`short_term_items`). Placed where "" leaves the text exactly as it was without them.
and any extra field the caller passes (it wins over these). The built-in texts say "interacted with"
where Hou et al. say "watched" or "purchased", so that one text serves every dataset; override `user`
for the paper's exact wording.

Item text is data, not instructions: every title in these fields goes through `quote_item`, which puts
it in double quotes on one line, so a title can neither start a prompt line nor end its own quotes
(`quote=False` renders titles raw, only to measure what the quoting buys).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from recbole_llm.errors import RecBoleLLMError, did_you_mean
from recbole_llm.llm.backend import Prompt

STRATEGIES = ("sequential", "recency_focused", "icl")
# Templates of LLM-written texts rather than ranking modes: one flat set of template fields each.
TASKS = ("profile", "augment")
LABEL_STYLES = ("letters", "numbers")
DOUBLE_QUOTES = '"\u201c\u201d\u201e\u201f\u2033\uff02'  # ASCII, typographic and full-width
_TO_SINGLE = str.maketrans(dict.fromkeys(DOUBLE_QUOTES, "'"))
# Whitespace of any kind (line and paragraph separators included) and control characters.
_LINE_BREAKING = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


@dataclass(frozen=True)
class PromptTemplate:
    """One mode's prompt for one strategy, plus how its answers are read.

    `fuzzy_cutoff` is how close a list-wise answer line must be to a candidate title to count as that
    candidate when it has no label (parse_ranking); `yes_word` and `no_word` are the point-wise
    answers whose logits are read, and fill {yes} and {no}.
    """

    user: str
    system: str | None = None
    answer_prefix: str = ""
    fuzzy_cutoff: float = 0.85
    yes_word: str = "Yes"
    no_word: str = "No"
    name: str = "custom"

    def render(self, **fields) -> Prompt:
        """The prompt with placeholders filled; a placeholder without a value is the user's error."""
        fields = {"yes": self.yes_word, "no": self.no_word, **fields}
        try:
            return Prompt(
                user=self.user.format_map(fields),
                system=None if self.system is None else self.system.format_map(fields),
                answer_prefix=self.answer_prefix.format_map(fields),
            )
        except KeyError as err:
            raise RecBoleLLMError(
                f"Prompt template {self.name!r} uses the placeholder {{{err.args[0]}}}, which has no value "
                f"here; available: {', '.join('{' + f + '}' for f in sorted(fields))}."
            ) from None
        except (IndexError, ValueError) as err:
            raise RecBoleLLMError(
                f"Prompt template {self.name!r} is not a valid format string ({err}); "
                "write literal braces as {{ and }}."
            ) from None


def _prompts_dir() -> Path:
    from recbole_llm.config import PROPERTIES  # packaged in a wheel, the checkout's folder otherwise

    return PROPERTIES / "prompts"


def modes() -> list[str]:
    """Ranking modes with a built-in template file."""
    return sorted(p.stem for p in _prompts_dir().glob("*.yaml") if p.stem not in TASKS)


@cache
def _mode_file(mode: str) -> dict:
    return yaml.safe_load((_prompts_dir() / f"{mode}.yaml").read_text(encoding="utf-8"))


def load_template(mode: str, strategy: str, overrides: dict | None = None) -> PromptTemplate:
    """The built-in template of `mode` and `strategy`, with `overrides` (e.g. {"user": "..."}) on top."""
    known_modes = modes()
    if mode not in known_modes:
        raise _unknown("ranking mode", mode, known_modes)
    _check_strategy(strategy)
    data = _mode_file(mode)
    fields = {**data.get("defaults", {}), **data[strategy], **(overrides or {})}
    known = [f.name for f in dataclasses.fields(PromptTemplate) if f.name != "name"]
    for key in fields:
        if key not in known:
            raise _unknown("prompt template field", key, known)
    return PromptTemplate(**fields, name=f"{mode}/{strategy}")


def load_task_template(task: str, overrides: dict | None = None) -> PromptTemplate:
    """The built-in template of an LLM-written text (`profile`, `augment`), `overrides` on top."""
    if task not in TASKS:
        raise _unknown("prompt task", task, TASKS)
    return PromptTemplate(**{**_mode_file(task), **(overrides or {})}, name=task)


def _unknown(kind: str, name, known) -> RecBoleLLMError:
    message = f"Unknown {kind} {name!r}; known: {', '.join(known)}."
    return RecBoleLLMError(message + did_you_mean(str(name), known))


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise _unknown("prompt strategy", strategy, STRATEGIES)


def candidate_labels(n: int, style: str = "letters") -> list[str]:
    """Labels of n candidates: A..Z, AA, AB, ... (spreadsheet columns) or 1..n."""
    if style == "numbers":
        return [str(i) for i in range(1, n + 1)]
    if style != "letters":
        raise _unknown("label style", style, LABEL_STYLES)
    labels = []
    for i in range(1, n + 1):
        label = ""
        while i:
            i, rest = divmod(i - 1, 26)
            label = chr(ord("A") + rest) + label
        labels.append(label)
    return labels


def quote_item(text: str) -> str:
    """An item's text as a prompt shows it: in double quotes, its own double quotes made single and
    every run of whitespace or control characters one space. A title that says "Ignore the list",
    mimics a label line ("B. Titanic") or carries newlines thus stays one quoted string on its line."""
    return '"' + _LINE_BREAKING.sub(" ", text.translate(_TO_SINGLE)).strip() + '"'


def _shown(text: str, quote: bool) -> str:
    return quote_item(text) if quote else text


def format_history(titles: list[str], quote: bool = True) -> str:
    """History titles numbered from 1, one a line, oldest first."""
    return "\n".join(f"{i}. {_shown(title, quote)}" for i, title in enumerate(titles, start=1))


def format_candidates(labels: list[str], titles: list[str], quote: bool = True) -> str:
    """Candidate titles behind their labels, one a line."""
    return "\n".join(_labelled(labels, titles, quote))


def _labelled(labels: list[str], titles: list[str], quote: bool) -> list[str]:
    return [f"{label}. {_shown(title, quote)}" for label, title in zip(labels, titles, strict=True)]


def build_prompt(
    template: PromptTemplate,
    strategy: str,
    history_titles: list[str],
    candidate_titles: list[str],
    labels: list[str],
    domain: str,
    quote: bool = True,
    **extra,
) -> Prompt:
    """The prompt for one user and candidate list; `icl` shows all but the last history item, which
    becomes the example's answer ({recent}). `quote=False` shows item text raw (see the module doc)."""
    _check_strategy(strategy)
    shown = history_titles[:-1] if strategy == "icl" else history_titles
    lines = _labelled(labels, candidate_titles, quote)
    fields = {
        "history": format_history(shown, quote),
        "recent": _shown(history_titles[-1], quote) if history_titles else "",
        "candidates": "\n".join(lines),
        "n": len(candidate_titles),
        "domain": domain,
        "profile": "",
        "recently": "",
    }
    if len(lines) == 1:
        fields["item"] = _shown(candidate_titles[0], quote)
    if len(lines) == 2:
        fields["first"], fields["second"] = lines
    return template.render(**{**fields, **extra})
