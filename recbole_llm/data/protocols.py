"""Test protocols, one class per type: which users are evaluated and what each one's model ranks.

A protocol is parsed and validated once (`parse_protocol`). Its fields are its identity: type,
parameters, `eval_users`, `seed` and `cold_items` all decide the evaluated lists, so all of them are
in its `label` (tables, result files); the key of its stored lists holds what decides the lists of
every test user (with the sampler's version), so that subsets of users rank the same lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from recbole_llm.errors import RecBoleLLMError, did_you_mean

# Bump whenever a change to user selection or negative sampling changes the lists drawn from the
# same data and parameters: stored sets made by an older sampler are then not reused.
SAMPLER_VERSION = 2
DEFAULT_SEED = 2020
_UNSET_OMITTED = ("cold_items",)


@dataclass(frozen=True)
class Protocol:
    """Every protocol evaluates a seeded subset of `eval_users` users (None: all) of its user pool."""

    type: ClassVar[str]
    # A protocol that ranks every item cannot be run by a model that ranks candidate lists only.
    ranks_all_items: ClassVar[bool] = False
    eval_users: int | None = None
    seed: int = DEFAULT_SEED
    # Only test cases whose ground-truth item has at most this many training interactions.
    cold_items: int | None = None

    @property
    def name(self) -> str:
        """The type and its parameters, e.g. 'uniform20'."""
        return self.type

    @property
    def seeded(self) -> bool:
        """Whether `seed` changes what is evaluated (a user sample, drawn negatives, shuffled lists)."""
        return self.eval_users is not None

    @property
    def label(self) -> str:
        """Name in tables and result files: 'full', 'uniform20-s2020', 'uniform20-200u-s2020'."""
        cold = [] if self.cold_items is None else [f"cold{self.cold_items}"]
        users = [] if self.eval_users is None else [f"{self.eval_users}u"]
        return "-".join([self.name, *cold, *users, *([f"s{self.seed}"] if self.seeded else [])])

    def identity(self) -> dict:
        """Everything that decides the evaluated lists (JSON-safe), for keys and result records.

        Optional refinements left unset are left out, so that keys made before they existed still hold.
        """
        fields = {
            k: v for k, v in dataclasses.asdict(self).items() if not (k in _UNSET_OMITTED and v is None)
        }
        return {"type": self.type, **fields, "sampler_version": SAMPLER_VERSION}

    def set_identity(self) -> dict:
        """What decides the lists of every test user (the stored set): not who is evaluated."""
        return {k: v for k, v in self.identity().items() if k not in ("eval_users", "cold_items")}

    def validate(self) -> None:
        users = self.eval_users
        if users is not None and (isinstance(users, bool) or not isinstance(users, int) or users < 1):
            raise RecBoleLLMError(f"eval_users must be a positive integer or null (all), not {users!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise RecBoleLLMError(f"The protocol seed must be an integer, not {self.seed!r}.")
        cold = self.cold_items
        if cold is not None and (isinstance(cold, bool) or not isinstance(cold, int) or cold < 0):
            raise RecBoleLLMError(f"candidates.cold_items must be an integer >= 0 or null, not {cold!r}.")

    def check_model(self, model_name: str, model_class: type) -> None:
        """Fail before any work when the model cannot be evaluated under this protocol."""
        if not self.ranks_all_items and getattr(model_class, "ranks_all_items_only", False):
            raise RecBoleLLMError(
                f"{model_name} ranks every item, so it cannot be tested under '{self.label}': "
                "use --candidates=full (its own stages rank the lists)."
            )
        if self.ranks_all_items and getattr(model_class, "ranks_candidate_lists_only", False):
            raise RecBoleLLMError(
                f"{model_name} ranks candidate lists, not every item, so it cannot be tested under "
                f"'{self.label}': use a candidate protocol such as "
                "--candidates=\"{'type': 'uniform', 'size': 20}\"."
            )


@dataclass(frozen=True)
class Full(Protocol):
    """Every item is ranked (seen items masked)."""

    type: ClassVar[str] = "full"
    ranks_all_items: ClassVar[bool] = True


@dataclass(frozen=True)
class Sized(Protocol):
    """A list of `size` items per user: the ground truth and `size - 1` others."""

    size: int = 0

    @property
    def name(self) -> str:
        return f"{self.type}{self.size}"

    @property
    def seeded(self) -> bool:
        return True

    def validate(self) -> None:
        super().validate()
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 2:
            raise RecBoleLLMError(
                f"candidates.size must be an integer >= 2 for type {self.type}, not {self.size!r}."
            )


@dataclass(frozen=True)
class Uniform(Sized):
    """Negatives drawn uniformly from the items the user never interacted with."""

    type: ClassVar[str] = "uniform"


@dataclass(frozen=True)
class Popularity(Sized):
    """Negatives drawn proportionally to their training interactions."""

    type: ClassVar[str] = "popularity"


@dataclass(frozen=True)
class Retriever(Sized):
    """The top-`size` unseen items of another model trained on the same data (a two-stage system)."""

    type: ClassVar[str] = "retriever"
    model: str | None = None
    include_ground_truth: bool = True  # a missed ground truth replaces the lowest retrieved item
    retriever_config: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        return f"retriever-{self.model}{self.size}" + ("" if self.include_ground_truth else "-nogt")

    def validate(self) -> None:
        super().validate()
        if not self.model or not isinstance(self.model, str):
            raise RecBoleLLMError("candidates.model must name the retriever model (e.g. Pop).")
        if not isinstance(self.retriever_config, dict):
            raise RecBoleLLMError("candidates.retriever_config must be a mapping of config keys.")


@dataclass(frozen=True)
class File(Protocol):
    """Lists read from `path` (`user<TAB>item item ...`); users are sampled among those it lists.

    With `shuffle` (default) each list is shuffled with the seed before any model sees it, so that a
    file whose ground truth always sits in one slot gives no position-biased ranker a free gain.
    """

    type: ClassVar[str] = "file"
    path: str | None = None
    shuffle: bool = True

    @property
    def name(self) -> str:
        return "file-" + Path(self.path).stem

    @property
    def seeded(self) -> bool:
        return self.eval_users is not None or self.shuffle

    def validate(self) -> None:
        super().validate()
        if not self.path or not isinstance(self.path, str):
            raise RecBoleLLMError("candidates.path must point to a candidate file.")
        if not Path(self.path).is_file():
            raise RecBoleLLMError(f"Candidate file not found: {self.path}")
        if not isinstance(self.shuffle, bool):
            raise RecBoleLLMError(f"candidates.shuffle must be true or false, not {self.shuffle!r}.")


@dataclass(frozen=True)
class Graded(Protocol):
    """ALRO's graded lists (Chao et al. 2024): after `history` items, a user's next `size` rated items,
    ranked against their ratings (NDCG with rating gains at `cutoffs`).

    The lists are each eligible user's last `size` interactions, held out of training (data/graded.py);
    each list is shuffled with the seed, so that its time order hands no position-biased ranker a gain.
    `gain`: 'rating' (gain = rating) or 'exp' (2^rating - 1).
    """

    type: ClassVar[str] = "graded"
    history: int = 20
    size: int = 25
    gain: str = "rating"
    cutoffs: tuple[int, ...] = (3, 10, 25)

    @property
    def name(self) -> str:
        parts = [f"graded{self.size}", *([] if self.history == 20 else [f"h{self.history}"])]
        return "-".join([*parts, *([] if self.gain == "rating" else [self.gain])])

    @property
    def seeded(self) -> bool:
        return True

    def set_identity(self) -> dict:
        """The gain and the cutoffs score the lists; they do not change them."""
        return {k: v for k, v in super().set_identity().items() if k not in ("gain", "cutoffs")}

    def validate(self) -> None:
        super().validate()
        for key, least in (("history", 2), ("size", 2)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise RecBoleLLMError(f"candidates.{key} must be an integer >= {least}, not {value!r}.")
        if self.gain not in GAINS:
            raise RecBoleLLMError(f"candidates.gain must be one of {', '.join(GAINS)}, not {self.gain!r}.")
        cutoffs = self.cutoffs
        if (
            not isinstance(cutoffs, (list, tuple))
            or not cutoffs
            or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.size for k in cutoffs)
        ):
            raise RecBoleLLMError(
                f"candidates.cutoffs must be a list of integers in 1..{self.size}, not {cutoffs!r}."
            )
        object.__setattr__(self, "cutoffs", tuple(cutoffs))  # hashable, whatever YAML gave
        if self.cold_items is not None:
            raise RecBoleLLMError("candidates.cold_items does not apply to type graded; remove it.")


GAINS = ("rating", "exp")

PROTOCOLS: dict[str, type[Protocol]] = {
    p.type: p for p in (Full, Uniform, Popularity, Retriever, File, Graded)
}


def parse_protocol(block, eval_users: int | None = None, seed: int = DEFAULT_SEED) -> Protocol:
    """A validated protocol from a `candidates` block (a mapping, or just its type).

    `eval_users` and `seed` (the run's) apply unless the block sets its own.
    """
    if isinstance(block, Protocol):
        return block
    if block is not None and not isinstance(block, (str, dict)):
        raise RecBoleLLMError(f"candidates must be a type name or a mapping, not {block!r}.")
    block = {"type": block} if isinstance(block, str) else dict(block or {})
    kind = block.pop("type", "full")
    cls = PROTOCOLS.get(kind)
    if cls is None:
        raise RecBoleLLMError(
            f"candidates.type must be one of {', '.join(PROTOCOLS)}, not {kind!r}."
            + did_you_mean(str(kind), PROTOCOLS)
        )
    known = [f.name for f in dataclasses.fields(cls)]
    for key in block:
        if key not in known:
            raise RecBoleLLMError(
                f"Unknown key {key!r} in candidates of type {kind}; known: type, {', '.join(known)}."
                + did_you_mean(str(key), known)
            )
    protocol = cls(**{"eval_users": eval_users, "seed": seed, **block})
    protocol.validate()
    return protocol
