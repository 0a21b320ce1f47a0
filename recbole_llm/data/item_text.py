"""Item text for prompts, read from the dataset's `.item` atomic file beside the interactions.

Read here rather than through RecBole's `load_col`, so that an LLM model sees exactly the same
dataset (same items, same split) as the classical models it is compared with: loading the item file
into RecBole can add items that no one interacted with and change the ranking space.
"""

from __future__ import annotations

import string
from pathlib import Path

import pandas as pd

from recbole_llm.errors import RecBoleLLMError, did_you_mean


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def read_item_file(data_path: str, dataset: str, field_separator: str = "\t") -> pd.DataFrame:
    """The `.item` file as text columns named without their `:type` suffix."""
    path = Path(data_path) / f"{dataset}.item"
    if not path.is_file():
        raise RecBoleLLMError(
            f"LLM models need item text, but {path} does not exist. Add a `{dataset}.item` atomic file "
            "with a title field (e.g. `item_id:token\ttitle:token_seq`)."
        )
    frame = pd.read_csv(path, sep=field_separator, dtype=str, keep_default_na=False, quoting=3)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def check_item_text_fields(config, template: str) -> None:
    """The `.item` file exists and has every field `template` uses (read from its header only)."""
    path = Path(config["data_path"]) / f"{config['dataset']}.item"
    if not path.is_file():
        raise RecBoleLLMError(
            f"LLM models need item text, but {path} does not exist. Add a `{config['dataset']}.item` atomic "
            "file with a title field (e.g. `item_id:token\ttitle:token_seq`)."
        )
    with path.open(encoding="utf-8", errors="replace") as f:
        header = [c.split(":")[0] for c in f.readline().rstrip("\r\n").split(config["field_separator"])]
    _check_fields(config, template, header, config["ITEM_ID_FIELD"])


def _check_fields(config, template: str, columns: list[str], item_field: str) -> None:
    missing = [f for f in [item_field, *template_fields(template)] if f not in columns]
    if missing:
        known = [c for c in columns if c != item_field]
        raise RecBoleLLMError(
            f"item_text {template!r} uses field(s) {missing} that {config['dataset']}.item does not have; "
            f"it has {known}." + did_you_mean(missing[0], known)
        )


def item_texts(config, dataset, template: str) -> list[str]:
    """Text of every internal item id (index 0, the padding item, is empty), rendered by `template`.

    Items missing from the `.item` file get their raw token, so a prompt never shows an empty line.
    """
    frame = read_item_file(config["data_path"], config["dataset"], config["field_separator"])
    item_field = dataset.iid_field
    _check_fields(config, template, list(frame.columns), item_field)
    rendered = frame.apply(lambda row: template.format(**row.to_dict()).strip(), axis=1)
    by_token = dict(zip(frame[item_field], rendered))
    tokens = dataset.field2id_token[item_field]
    texts = [by_token.get(str(token), str(token)) for token in tokens]
    texts[0] = ""
    return texts
