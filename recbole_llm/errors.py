"""The one exception type whose message is shown to users as-is (no traceback)."""

import difflib
from collections.abc import Iterable


class RecBoleLLMError(Exception):
    """A problem with the user's input (model, dataset, config) that they can fix."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Suffix for an error message listing the closest known names, case-insensitively."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean: " + ", ".join(by_lower[c] for c in close) + "?"
