"""Tiny datasets written per test, and configs that keep RecBole's output inside tmp_path."""

from __future__ import annotations

import numpy as np
import pytest


def write_tiny_dataset(root, name="tiny", n_users=12, n_items=40, per_user=10, seed=0, rated=False):
    """Atomic files of a dataset where each user has `per_user` distinct items in time order (`rated`:
    with a rating column, 1-5 stepping by 0.5)."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\t" + ("rating:float\t" if rated else "") + "timestamp:float"]
    for u in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False)
        ratings = [f"{r / 2}\t" for r in rng.integers(2, 11, size=per_user)] if rated else [""] * per_user
        lines += [f"u{u}\ti{i}\t{r}{t}" for t, (i, r) in enumerate(zip(items, ratings), start=1)]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    titles = ["item_id:token\ttitle:token_seq"] + [f"i{i}\tItem number {i}" for i in range(1, n_items + 1)]
    (folder / f"{name}.item").write_text("\n".join(titles) + "\n")
    return root


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """Config dict for a run on a fresh tiny dataset; RecBole's log/ and saved/ go to tmp_path."""
    monkeypatch.chdir(tmp_path)
    write_tiny_dataset(tmp_path / "data")
    return {
        "data_path": str(tmp_path / "data"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "checkpoint_dir": str(tmp_path / "saved"),
        "candidates_dir": str(tmp_path / "candidates"),
        "epochs": 1,
        "train_batch_size": 64,
        "show_progress": False,
        "state": "WARNING",
        "embedding_size": 8,
        "hidden_size": 8,
        "inner_size": 16,
        "MAX_ITEM_LIST_LENGTH": 5,
    }


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    """A tiny random Llama on disk, one per test module (tests.llm_fixtures)."""
    pytest.importorskip("transformers")
    from tests.llm_fixtures import write_tiny_llama

    return str(write_tiny_llama(tmp_path_factory.mktemp("llama")))
