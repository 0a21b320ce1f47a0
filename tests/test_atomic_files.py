"""Own datasets load without `load_col`, and malformed atomic files fail in one line, before RecBole."""

from pathlib import Path

import numpy as np
import pytest
import recbole
import yaml

from recbole_llm.cli import run_recbole_main
from recbole_llm.config import Config
from recbole_llm.data.atomic_files import check_unique_ids, read_atomic_file
from recbole_llm.data.split import prepare_dataset_files
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.quick_start import run
from tests.conftest import write_tiny_dataset


def own_config(tiny: dict) -> dict:
    """The tiny run's settings, with no `load_col`: what a user with their own files would give."""
    return {k: v for k, v in tiny.items() if k != "load_col"}


def write_inter(folder: Path, name: str, header: list[str], rows: list[tuple]) -> Path:
    (folder / name).mkdir(parents=True)
    path = folder / name / f"{name}.inter"
    path.write_text("\n".join(["\t".join(header), *("\t".join(map(str, r)) for r in rows)]) + "\n")
    return path


def test_own_dataset_needs_no_load_col_and_is_split_by_timestamp(tiny):
    """Rows are shuffled, so only the timestamps (not file order) can give the latest item."""
    rng = np.random.default_rng(1)
    rows = []
    for u in range(1, 9):
        items = rng.choice(np.arange(1, 31), size=6, replace=False)
        times = rng.choice(np.arange(1000, 9000), size=6, replace=False)
        rows += [(f"u{u}", f"i{i}", 1 + (i % 5), t) for i, t in zip(items, times)]
    rows = [rows[k] for k in rng.permutation(len(rows))]
    header = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    write_inter(Path(tiny["data_path"]), "shop", header, rows)

    result = run("Pop", "shop", config_dict=own_config(tiny))

    by_user: dict[str, list[tuple]] = {}
    for user, item, _, time in rows:
        by_user.setdefault(user, []).append((time, item))
    latest = {u: max(events)[1] for u, events in by_user.items()}
    second = {u: sorted(events)[-2][1] for u, events in by_user.items()}
    split = result.trained.split
    ds = split.dataset
    for pairs, expected in ((split.test_pairs, latest), (split.valid_pairs, second)):
        users, items = ds.id2token(ds.uid_field, pairs[0]), ds.id2token(ds.iid_field, pairs[1])
        assert dict(zip(users, items)) == expected
    assert "rating" in ds.field2type, "the rating column is loaded where the file has one"
    assert 0 <= result.test["full"]["ndcg@10"] <= 1


def test_without_timestamps_each_users_last_row_is_the_test_item(tiny, caplog):
    rows = [("a", "x"), ("b", "y"), ("c", "p"), ("a", "z"), ("b", "x"), ("a", "y"), ("c", "q"), ("b", "w")]
    rows += [("a", "w"), ("c", "x"), ("b", "z")]
    write_inter(Path(tiny["data_path"]), "clicks", ["user_id:token", "item_id:token"], rows)

    split = run("Pop", "clicks", config_dict={**own_config(tiny), "topk": [1, 5]}).trained.split

    ds = split.dataset
    last, second_last = {"a": "w", "b": "z", "c": "x"}, {"a": "y", "b": "w", "c": "q"}
    for pairs, expected in ((split.test_pairs, last), (split.valid_pairs, second_last)):
        users, items = ds.id2token(ds.uid_field, pairs[0]), ds.id2token(ds.iid_field, pairs[1])
        assert dict(zip(users, items)) == expected
    assert any("position in the .inter file" in r.getMessage() for r in caplog.records)


def test_ml_100k_loads_the_same_columns_as_recbole_itself():
    """The committed ml-100k leaderboards depend on this split: RecBole's own ml-100k columns."""
    config = Config("Pop", "ml-100k")
    prepare_dataset_files(config)
    own = Path(recbole.__file__).parent / "properties" / "dataset" / "ml-100k.yaml"
    assert config["load_col"] == yaml.safe_load(own.read_text())["load_col"]


def test_a_given_load_col_is_kept(tiny):
    write_inter(
        Path(tiny["data_path"]),
        "rated",
        ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
        [("u", "i", 3, 1)],
    )
    config = Config("Pop", "rated", config_dict=tiny)
    prepare_dataset_files(config)
    assert config["load_col"] == tiny["load_col"]


def _last_row(field: str, value: str):
    """Replace `field` of the file's last row (the whole column must be read to find it)."""

    def edit(text: str) -> str:
        header, *rows = text.strip("\n").split("\n")
        column = [h.split(":")[0] for h in header.split("\t")].index(field)
        cells = rows[-1].split("\t")
        cells[column] = value
        return "\n".join([header, *rows[:-1], "\t".join(cells)]) + "\n"

    return edit


DEFECTS = {
    "inter without item_id": ("inter", "item_id", lambda t: t.replace("item_id:token", "movie:token", 1)),
    "non-numeric timestamp": ("inter", "timestamp", _last_row("timestamp", "yesterday")),
    "empty timestamp": ("inter", "timestamp", _last_row("timestamp", "")),
    "timestamp typed token": (
        "inter",
        "timestamp",
        lambda t: t.replace("timestamp:float", "timestamp:token"),
    ),
    "0-byte inter": ("inter", None, lambda t: ""),
    "header-only inter": ("inter", None, lambda t: t.split("\n")[0] + "\n"),
    "header without types": ("inter", "user_id", lambda t: t.replace(":token", "").replace(":float", "")),
    "comma-separated inter": ("inter", None, lambda t: t.replace("\t", ",")),
    "item with duplicate ids": ("item", "item_id", lambda t: t + "i7\tAnother title\n"),
    "item without its id column": ("item", "item_id", lambda t: t.replace("item_id:token", "movie:token", 1)),
}


def cli_args(tiny: dict, dataset: str, *extra: str) -> list[str]:
    keys = ("data_path", "checkpoint_dir", "candidates_dir", "epochs", "show_progress", "state")
    return ["--model=Pop", f"--dataset={dataset}", *(f"--{k}={tiny[k]}" for k in keys), *extra]


def assert_one_line_error(capsys, rc: int, path: Path, column: str | None) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("run_recbole: error: ")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(path) in lines[0] and (column is None or f"'{column}'" in lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize("given_load_col", [False, True])
@pytest.mark.parametrize("defect", list(DEFECTS))
def test_a_bad_atomic_file_gives_one_line_naming_file_and_column(tiny, capsys, defect, given_load_col):
    suffix, column, edit = DEFECTS[defect]
    path = Path(tiny["data_path"]) / "tiny" / f"tiny.{suffix}"
    path.write_text(edit(path.read_text()))
    extra = [f"--load_col={tiny['load_col']}"] if given_load_col else []

    rc = run_recbole_main(cli_args(tiny, "tiny", *extra))

    assert_one_line_error(capsys, rc, path, column)


def test_missing_time_error_refuses_a_dataset_without_timestamps(tiny, capsys):
    path = write_inter(
        Path(tiny["data_path"]), "clicks", ["user_id:token", "item_id:token"], [("a", "x")] * 3
    )

    rc = run_recbole_main(cli_args(tiny, "clicks", "--missing_time=error"))

    line = assert_one_line_error(capsys, rc, path, "timestamp")
    assert "missing_time: position" in line


def test_duplicate_item_ids_are_counted_independently(tmp_path):
    """The message's count of a repeated id matches a count made by hand."""
    write_tiny_dataset(tmp_path, n_items=5, per_user=2)
    path = tmp_path / "tiny" / "tiny.item"
    path.write_text(path.read_text() + "i2\tagain\ni2\tand again\ni4\tonce more\n")

    with pytest.raises(RecBoleLLMError, match=r"column 'item_id' lists 'i2' 3 times \(repeated ids: 2\)"):
        check_unique_ids(read_atomic_file(path, "\t"), "item_id")
