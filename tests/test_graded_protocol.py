"""The graded protocol: each user's next `size` rated items after `history` items, held out of training,
ranked by every model on the same lists and scored by NDCG with rating gains, ties pessimistic."""

import itertools
import math

import numpy as np
import pytest
import torch

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.evaluation.graded import graded_ndcg
from recbole_llm.quick_start import evaluate, run, train
from tests.llm_fixtures import FirstShownWins

GRADED = {"type": "graded", "history": 3, "size": 5, "cutoffs": [3, 5]}
LABEL = "graded5-h3-s2020"
SHORT = "u9"  # 6 interactions: fewer than history + size, so not evaluated


def brute_force_ndcg(scores, gains, k):
    """The smallest NDCG@k over every order that sorts `scores` descending (ties in any order)."""
    ideal = sorted(gains, reverse=True)[:k]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    perms = itertools.permutations(range(len(scores)))
    orders = [p for p in perms if (np.diff(scores[list(p)]) <= 0).all()]
    dcg = min(sum(gains[i] / math.log2(r + 2) for r, i in enumerate(p[:k])) for p in orders)
    return dcg / idcg if idcg > 0 else 0.0


def test_graded_ndcg_equals_the_pessimistic_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(40, 6)).astype(float)  # many ties
    gains = rng.integers(0, 6, size=(40, 6)).astype(float)
    got = graded_ndcg(torch.tensor(scores), torch.tensor(gains), (1, 3, 6)).numpy()
    want = [[brute_force_ndcg(s, g, k) for k in (1, 3, 6)] for s, g in zip(scores, gains)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_a_constant_scorer_gets_the_worst_order_and_nan_ranks_last():
    gains = torch.tensor([[5.0, 1.0, 3.0]])
    worst = graded_ndcg(torch.zeros(1, 3), gains, (1,))
    assert worst.item() == pytest.approx(1 / 5)
    nan_first = graded_ndcg(torch.tensor([[float("nan"), 0.0, 0.0]]), gains, (3,))
    assert nan_first.item() == pytest.approx(
        graded_ndcg(torch.tensor([[-1.0, 0.0, 0.0]]), gains, (3,)).item()
    )


def write_rated(root, name="rated"):
    """Users u1..u8 with 9 items each (time order i1..): history 3 + window 5 fits after 1 spare item."""
    folder = root / name
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    rng = np.random.default_rng(1)
    for u in range(1, 9):
        items = rng.choice(np.arange(1, 31), size=9, replace=False)
        lines += [f"u{u}\ti{i}\t{1 + (u * 7 + t) % 5}\t{t}" for t, i in enumerate(items, start=1)]
    lines += [f"{SHORT}\ti{i}\t3\t{i}" for i in range(1, 7)]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    titles = ["item_id:token\ttitle:token_seq"] + [f"i{i}\tItem number {i}" for i in range(1, 31)]
    (folder / f"{name}.item").write_text("\n".join(titles) + "\n")
    return lines[1:]


@pytest.fixture
def rated(tiny, tmp_path):
    rows = write_rated(tmp_path / "data")
    by_user: dict[str, list[tuple[str, float]]] = {}
    for row in rows:
        user, item, rating, _ = row.split("\t")
        by_user.setdefault(user, []).append((item, float(rating)))
    config = {**tiny, "load_col": None, "candidates": GRADED, "epochs": 1}
    return config, by_user


def lists_of(trained) -> dict[str, list[str]]:
    protocol = trained.test_loaders[LABEL].protocol
    ds = trained.split.dataset
    users = np.flatnonzero(protocol.gains.abs().sum(1).numpy())
    cands = protocol.candidates[users].numpy()
    return {
        str(u): list(ds.id2token(ds.iid_field, r)) for u, r in zip(ds.id2token(ds.uid_field, users), cands)
    }


def test_lists_are_the_next_rated_items_after_the_history_and_never_trained_on(rated):
    config, by_user = rated
    trained = train("Pop", "rated", config_dict=config, saved=False)
    lists = lists_of(trained)
    assert sorted(lists) == [f"u{u}" for u in range(1, 9)]  # u9 is too short
    for user, items in lists.items():
        window = by_user[user][-5:]
        assert sorted(items) == sorted(i for i, _ in window)
    ds, split = trained.split.dataset, trained.split
    protocol = trained.test_loaders[LABEL].protocol
    uid = int(ds.token2id(ds.uid_field, "u1"))
    rating = dict(by_user["u1"])
    want = [rating[i] for i in ds.id2token(ds.iid_field, protocol.candidates[uid].numpy())]
    assert protocol.gains[uid].tolist() == want
    window = {(u, i) for u, items in lists.items() for i in items}
    for loader in (split.train, split.valid):
        inter = loader._dataset.inter_feat
        pairs = zip(
            ds.id2token(ds.uid_field, inter[ds.uid_field]), ds.id2token(ds.iid_field, inter[ds.iid_field])
        )
        assert not window & set(pairs)
    test_inter = split.test._dataset.inter_feat
    test_items = dict(
        zip(
            ds.id2token(ds.uid_field, test_inter[ds.uid_field]),
            ds.id2token(ds.iid_field, test_inter[ds.iid_field]),
        )
    )
    assert all(test_items[u] == by_user[u][-5][0] for u in lists)  # the model's input ends before the window


def test_sasrec_and_pop_run_end_to_end_on_the_same_lists(rated):
    config, _ = rated
    records = {}
    for model in ("SASRec", "Pop"):
        result = run(model, "rated", config_dict=config, saved=False)
        metrics = result.test[LABEL]
        assert set(metrics) == {"ndcg@3", "ndcg@5"} and all(0 <= v <= 1 for v in metrics.values())
        per_user = result.per_user[LABEL]
        assert sorted(per_user["users"]) == sorted(f"u{u}" for u in range(1, 9)), "graded users only"
        for metric, value in metrics.items():
            assert round(float(per_user["values"][metric].mean()), 4) == value
        records[model] = result.lists[LABEL]
    assert records["SASRec"]["lists_sha256"] == records["Pop"]["lists_sha256"]
    assert records["Pop"]["n_users"] == 8
    # Each user's value is that user's own graded NDCG: Pop's counts of the listed items vs their ratings.
    trained, protocol = result.trained, result.trained.test_loaders[LABEL].protocol
    ds, counts = trained.split.dataset, trained.model.item_cnt.squeeze(1).double()
    for token, got in zip(per_user["users"], per_user["values"]["ndcg@3"]):
        uid = int(ds.token2id(ds.uid_field, token))
        scores, gains = counts[protocol.candidates[uid]].numpy(), protocol.gains[uid].numpy()
        assert got == pytest.approx(brute_force_ndcg(scores, gains, 3))


def test_a_zero_shot_llm_ranker_scores_the_same_lists(rated):
    config, _ = rated
    pop = run("Pop", "rated", config_dict=config, saved=False)
    settings = {
        **config,
        "item_text": "{title}",
        "llm_backend": FirstShownWins(),
        "no_cache": True,
        "eval_users": None,
    }
    llm = run("LLMRanker", "rated", config_dict=settings, saved=False)
    assert llm.lists[LABEL]["lists_sha256"] == pop.lists[LABEL]["lists_sha256"]
    assert set(llm.test[LABEL]) == {"ndcg@3", "ndcg@5"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"load_col": {"inter": ["user_id", "item_id", "timestamp"]}}, "no 'rating' column"),
        ({"candidates": {**GRADED, "history": 30}}, "No user of rated has history"),
        ({"candidates": {**GRADED, "gain": "linear"}}, "candidates.gain must be one of"),
        ({"candidates": {**GRADED, "cutoffs": [3, 10]}}, "candidates.cutoffs must be"),
    ],
)
def test_config_errors_fail_in_one_line_before_training(rated, change, message):
    config, _ = rated
    with pytest.raises(RecBoleLLMError, match=message):
        train("SASRec", "rated", config_dict={**config, **change}, saved=False)


def test_graded_is_tested_alone_and_only_on_its_own_split(rated):
    config, _ = rated
    with pytest.raises(RecBoleLLMError, match="tested alone"):
        train(
            "Pop",
            "rated",
            config_dict=config,
            saved=False,
            protocols=[GRADED, {"type": "uniform", "size": 4}],
        )
    trained = train("Pop", "rated", config_dict=config, saved=False)
    with pytest.raises(RecBoleLLMError, match="changes the split"):
        evaluate(trained, [{"type": "uniform", "size": 4}])
    assert set(evaluate(trained, [{**GRADED, "gain": "exp"}]).test) == {"graded5-h3-exp-s2020"}
