"""Load a RecBole dataset, split it once, and keep what the protocol needs from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from logging import getLogger

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import FeatureSource, FeatureType, ModelType

from recbole_llm.data.atomic_files import AtomicFile, check_numbers, check_unique_ids, read_atomic_file
from recbole_llm.data.graded import Windows, hold_out_windows
from recbole_llm.data.protocols import Graded
from recbole_llm.errors import RecBoleLLMError

# The `.inter` fields the protocol uses: loaded whenever the header has them, unless `load_col` is given.
PROTOCOL_FIELDS = ("USER_ID_FIELD", "ITEM_ID_FIELD", "RATING_FIELD", "TIME_FIELD")
MISSING_TIME = ("position", "error")


@dataclass
class Split:
    """RecBole's loaders plus the user-item pairs needed for masking and negative sampling."""

    dataset: object
    train: object
    valid: object
    test: object
    seen: sp.csr_matrix  # every (user, item) pair of the dataset (less held-out graded windows)
    valid_pairs: tuple[np.ndarray, np.ndarray]
    test_pairs: tuple[np.ndarray, np.ndarray]
    windows: Windows | None = None  # the graded protocol's held-out lists, when the run has one

    @property
    def n_users(self) -> int:
        return self.dataset.user_num

    @property
    def n_items(self) -> int:
        return self.dataset.item_num

    def history(self, phase: str) -> sp.csr_matrix:
        """Items a user has seen before the evaluated interaction of `phase` ('valid' | 'test').

        Defined as all of the user's items minus those held out in this and later phases, so that
        it is the same for general and sequential datasets.
        """
        held = [self.test_pairs] if phase == "test" else [self.valid_pairs, self.test_pairs]
        users = np.concatenate([u for u, _ in held])
        items = np.concatenate([i for _, i in held])
        held_out = pair_matrix(users, items, self.seen.shape)
        return (self.seen - self.seen.multiply(held_out)).tocsr()


def pair_matrix(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """0/1 user x item matrix of the given pairs (duplicates collapse to one)."""
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    m.data[:] = 1.0
    return m


def subset_loader(config, loader, keep: np.ndarray, shuffle: bool = False):
    """A new RecBole loader over the rows of `loader`'s dataset where `keep` is true.

    Always a new object, so that loaders of different protocols never share their `protocol`.
    """
    ds = loader._dataset
    subset = ds if keep.all() else ds.copy(ds.inter_feat[torch.from_numpy(keep)])
    return type(loader)(config, subset, loader._sampler, shuffle=shuffle)


def _pairs(dataset) -> tuple[np.ndarray, np.ndarray]:
    inter = dataset.inter_feat
    return inter[dataset.uid_field].numpy(), inter[dataset.iid_field].numpy()


def _inter_paths(config) -> list[str]:
    """The `.inter` files RecBole will read: one, or one per part of a pre-split benchmark."""
    folder, name = config["data_path"], config["dataset"]
    parts = config["benchmark_filename"]
    paths = (
        [os.path.join(folder, f"{name}.inter")]
        if parts is None
        else [os.path.join(folder, f"{name}.{part}.inter") for part in parts]
    )
    for path in paths:
        if not os.path.isfile(path):
            raise RecBoleLLMError(
                f"Dataset '{name}' not found: expected RecBole atomic files such as {path}. Set "
                f"--data_path to the folder that contains a '{name}/' folder (ml-100k is built in and needs "
                "no data_path)."
            )
    return paths


def _needs_time(config) -> bool:
    """Whether RecBole orders interactions by the time field (time-ordered split or sequences)."""
    ordered = config["eval_args"]["order"] == "TO" or config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    return ordered and config["benchmark_filename"] is None


def _default_load_col(config, inter: AtomicFile) -> dict | None:
    """RecBole's default `load_col` with every protocol field the `.inter` header has.

    RecBole's default for a dataset it does not know by name loads only user and item ids, so the
    time-ordered split fails on one's own data unless `load_col` is given by hand.
    """
    load_col = config["load_col"]
    if load_col is None or load_col.get("inter") == "*":
        return load_col
    wanted = [*load_col.get("inter", []), *(config[key] for key in PROTOCOL_FIELDS)]
    return {**load_col, "inter": [c for c in dict.fromkeys(wanted) if c in inter.types]}


def _loaded_columns(inter: AtomicFile, load_col: dict | None, unload_col: dict | None) -> list[str]:
    """The `.inter` columns RecBole will load under `load_col` and `unload_col`."""
    unload_col = unload_col or {}
    listed = inter.types if load_col is None or load_col.get("inter") == "*" else load_col.get("inter", [])
    return [c for c in inter.types if c in listed and c not in unload_col.get("inter", [])]


def loaded_inter_columns(config) -> list[str]:
    """The `.inter` columns a run of `config` will load, as `prepare_dataset_files` chooses them, read
    from the header only: a model's `check_config` may ask before anything is loaded."""
    inter = read_atomic_file(_inter_paths(config)[0], config["field_separator"], config["encoding"])
    given = "load_col" in config.external_config_dict
    load_col = config["load_col"] if given else _default_load_col(config, inter)
    return _loaded_columns(inter, load_col, config["unload_col"])


def _check_inter(config, inter: AtomicFile) -> None:
    """Ids present and loaded, time present (or the missing_time fallback), float columns numeric."""
    if not inter.has_rows():
        raise inter.fail("the header has no rows below it", "add one interaction per line")
    loaded = _loaded_columns(inter, config["load_col"], config["unload_col"])
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        kind = key.split("_")[0].lower()
        inter.require(config[key], f"name the {kind} id column '{config[key]}' in the header, or set {key}")
        if config[key] not in loaded:
            raise inter.fail(f"load_col['inter'] leaves out '{config[key]}'", "add it to load_col")
    time = config["TIME_FIELD"]
    if time in loaded and inter.types[time] != "float":
        raise inter.fail(
            f"column '{time}' is typed {inter.types[time]}, but interactions are ordered by it",
            f"store numbers (e.g. Unix seconds) typed '{time}:float'",
        )
    if time not in loaded and _needs_time(config) and config["missing_time"] == "error":
        where = "load_col leaves out" if time in inter.types else "there is no"
        raise inter.fail(
            f"{where} '{time}' column to order interactions by (missing_time: error)",
            f"add a '{time}:float' column, or set missing_time: position to order by position in the file",
        )
    floats = [c for c in loaded if inter.types[c] == "float"]
    check_numbers(inter, floats, time=time if time in loaded and _needs_time(config) else None)


def _check_features(config) -> None:
    """Each `.item` / `.user` file beside the interactions names its id column and lists each id once."""
    for suffix, key in (("item", "ITEM_ID_FIELD"), ("user", "USER_ID_FIELD")):
        path = os.path.join(config["data_path"], f"{config['dataset']}.{suffix}")
        if os.path.isfile(path):
            features = read_atomic_file(path, config["field_separator"], config["encoding"])
            features.require(config[key], f"name the {suffix} id column '{config[key]}' in the header")
            check_unique_ids(features, config[key])


def prepare_dataset_files(config) -> None:
    """Check the dataset's atomic files and choose the `.inter` columns to load, before RecBole runs.

    Each defect becomes one line naming the file, the column and the fix, instead of a traceback from
    inside RecBole's loader. `load_col` is set only when the user did not give it.
    """
    if config["missing_time"] not in MISSING_TIME:
        raise RecBoleLLMError(f"missing_time must be one of {MISSING_TIME}, not {config['missing_time']!r}.")
    if _needs_time(config) and not config["TIME_FIELD"]:
        raise RecBoleLLMError(
            "Interactions are ordered by time (eval_args.order: TO), but TIME_FIELD is not set."
        )
    separator, encoding = config["field_separator"], config["encoding"]
    inters = [read_atomic_file(path, separator, encoding) for path in _inter_paths(config)]
    if "load_col" not in config.external_config_dict:
        config["load_col"] = _default_load_col(config, inters[0])
    for inter in inters:
        _check_inter(config, inter)
    _check_features(config)


def _add_missing_time(config, dataset) -> None:
    """Under `missing_time: position`, give a dataset loaded without its time field one: each row's position.

    Loading and filtering keep the file's row order, so a user's last row becomes the test item and
    the one before it the validation item, exactly as timestamps increasing down the file would.
    """
    time = config["TIME_FIELD"]
    if not _needs_time(config) or time in dataset.inter_feat or config["missing_time"] != "position":
        return
    getLogger().warning(
        f"{config['dataset']}: no '{time}' field loaded, so each user's interactions are ordered by their "
        "position in the .inter file (set missing_time: error to refuse instead)."
    )
    dataset.inter_feat[time] = np.arange(len(dataset.inter_feat), dtype=np.float64)
    dataset.set_field_property(time, FeatureType.FLOAT, FeatureSource.INTERACTION, 1)


def load_split(config, graded: Graded | None = None) -> Split:
    """Create the dataset and RecBole's train/valid/test loaders for `config`; with a `graded`
    protocol, its windows are held out first (data/graded.py) and `seen` covers what is left."""
    dataset = create_dataset(config)
    _add_missing_time(config, dataset)
    windows = None if graded is None else hold_out_windows(config, dataset, graded)
    inter = dataset.inter_feat  # still a DataFrame of every interaction, before augmentation
    shape = (dataset.user_num, dataset.item_num)
    seen = pair_matrix(inter[dataset.uid_field].to_numpy(), inter[dataset.iid_field].to_numpy(), shape)
    train, valid, test = data_preparation(config, dataset)
    return Split(dataset, train, valid, test, seen, _pairs(valid._dataset), _pairs(test._dataset), windows)
