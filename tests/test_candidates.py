import numpy as np
import pytest
import scipy.sparse as sp

from recbole_llm.data.candidates import CandidateSet, sample_candidates, select_users, top_n
from recbole_llm.data.protocols import parse_protocol
from recbole_llm.errors import RecBoleLLMError


def _seen(rows, n_items):
    users = [u for u, items in enumerate(rows) for _ in items]
    items = [i for r in rows for i in r]
    return sp.csr_matrix((np.ones(len(items)), (users, items)), shape=(len(rows), n_items))


def test_sampled_candidates_hold_the_positive_and_only_unseen_negatives():
    n_items = 50
    history = [[1, 2, 3, 7], [4, 5, 9, 10, 11], [1, 20, 30]]
    seen = _seen(history, n_items)
    positives = {0: np.array([7]), 1: np.array([11]), 2: np.array([30])}
    users = np.array([0, 1, 2])
    rows = sample_candidates(users, positives, seen, 20, np.random.default_rng(3))
    assert rows.shape == (3, 20)
    for r, u in enumerate(users):
        row = set(rows[r].tolist())
        assert len(row) == 20, "no duplicates"
        assert positives[u][0] in row
        negatives = row - {positives[u][0]}
        assert not negatives & set(history[u]), "negatives exclude the user's history"
        assert 0 not in row, "padding item is never a candidate"


def test_sampling_is_seeded_and_shuffles_the_positive():
    seen = _seen([[1, 2]] * 200, 100)
    positives = {u: np.array([2]) for u in range(200)}
    users = np.arange(200)
    a = sample_candidates(users, positives, seen, 10, np.random.default_rng(0))
    b = sample_candidates(users, positives, seen, 10, np.random.default_rng(0))
    c = sample_candidates(users, positives, seen, 10, np.random.default_rng(1))
    assert (a == b).all() and not (a == c).all()
    where = np.argmax(a == 2, axis=1)
    assert len(set(where.tolist())) == 10, "the ground truth is not always in the same slot"


def test_popularity_sampling_follows_the_weights():
    n_items = 30
    seen = _seen([[1]] * 4000, n_items)
    positives = {u: np.array([1]) for u in range(4000)}
    weights = np.zeros(n_items)
    weights[2:] = np.arange(2, n_items, dtype=float) ** 2
    rows = sample_candidates(np.arange(4000), positives, seen, 3, np.random.default_rng(0), weights)
    counts = np.bincount(rows.ravel(), minlength=n_items)
    assert counts[0] == 0 and counts[1] == 4000
    assert counts[29] > 5 * counts[10] > 0


def test_too_few_unseen_items_is_a_clear_error():
    seen = _seen([[1, 2, 3, 4, 5, 6, 7]], 10)
    with pytest.raises(RecBoleLLMError, match="smaller candidates.size"):
        sample_candidates(np.array([0]), {0: np.array([7])}, seen, 5, np.random.default_rng(0))


def test_retriever_top_n_masks_history_and_forces_the_ground_truth_in():
    scores = np.array([[0.0, 9, 8, 7, 6, 5, 4, 3, 2, 1.0]] * 2)
    history = _seen([[1], [1]], 10)
    positives = {0: np.array([9]), 1: np.array([3])}
    rng = np.random.default_rng(0)
    kept = top_n(scores, history, np.array([0, 1]), positives, 3, True, rng)
    assert set(kept[0]) == {2, 3, 9}, "missed ground truth replaces the lowest retrieved item"
    assert set(kept[1]) == {2, 3, 4}, "a retrieved ground truth is kept as is"
    plain = top_n(scores, history, np.array([0, 1]), positives, 3, False, rng)
    assert set(plain[0]) == {2, 3, 4}


def test_protocol_labels_carry_users_and_seed():
    assert parse_protocol("full").label == "full"
    assert parse_protocol("full", eval_users=50, seed=3).label == "full-50u-s3"
    assert parse_protocol({"type": "full", "cold_items": 5}).label == "full-cold5"
    assert parse_protocol({"type": "uniform", "size": 20}).label == "uniform20-s2020"
    assert parse_protocol({"type": "uniform", "size": 20, "eval_users": 200}).label == "uniform20-200u-s2020"
    assert (
        parse_protocol({"type": "retriever", "model": "Pop", "size": 50}, seed=1).label
        == "retriever-Pop50-s1"
    )
    a, b = (
        parse_protocol({"type": "uniform", "size": 20}),
        parse_protocol({"type": "uniform", "size": 20}, 200),
    )
    assert a.set_identity() == b.set_identity() and a.identity() != b.identity()


def test_an_unset_optional_field_leaves_the_identity_as_before_it_existed():
    """Run keys of finished results hash the identity: a new optional field must not change it."""
    uniform = parse_protocol({"type": "uniform", "size": 20}, eval_users=200)
    before = {"type": "uniform", "eval_users": 200, "seed": 2020, "size": 20, "sampler_version": 2}
    assert uniform.identity() == before
    assert parse_protocol({"type": "uniform", "size": 20, "cold_items": 3}).identity()["cold_items"] == 3


def test_protocol_validation():
    for bad, message in [
        ({"type": "uniform"}, "size must be an integer"),
        ({"type": "sampled", "size": 5}, "must be one of"),
        ({"type": "unifrom", "size": 5}, "Did you mean: uniform"),
        ({"type": "retriever", "size": 5}, "name the retriever"),
        ({"type": "full", "sise": 5}, "Unknown key 'sise'"),
        ({"type": "uniform", "size": 5, "eval_users": 0}, "eval_users must be a positive integer"),
        ({"type": "file", "path": "/no/such.tsv"}, "Candidate file not found"),
        (["full"], "type name or a mapping"),
        ({"type": "full", "cold_items": -1}, "cold_items must be an integer >= 0"),
    ]:
        with pytest.raises(RecBoleLLMError, match=message):
            parse_protocol(bad)


def test_user_samples_are_nested_and_refuse_to_shrink():
    pool = [f"u{i}" for i in range(100)]
    small, large = select_users(pool, 10, 5), select_users(pool, 40, 5)
    assert set(small) < set(large) and small == sorted(small)
    assert select_users(list(reversed(pool)), 10, 5) == small, "depends on the tokens, not their order"
    assert select_users(pool, None, 5) == sorted(pool)
    with pytest.raises(RecBoleLLMError, match="eval_users=101, but only 100 users"):
        select_users(pool, 101, 5)


def test_candidate_file_round_trip_and_malformed_lines(tmp_path):
    cs = CandidateSet(["u1", "u2"], [["i1", "i2"], ["i3", "i4"]])
    cs.write(tmp_path / "c.tsv", {"k": 1})
    assert (tmp_path / "c.tsv").read_text() == "u1\ti1 i2\nu2\ti3 i4\n"
    assert CandidateSet.read(tmp_path / "c.tsv") == cs
    (tmp_path / "bad.tsv").write_text("u1 i1 i2\n")
    with pytest.raises(RecBoleLLMError, match="bad.tsv:1"):
        CandidateSet.read(tmp_path / "bad.tsv")
