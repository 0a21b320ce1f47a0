"""'The same candidate lists' as a checked fact: lists depend on tokens and parameters only, every
subset of users ranks the lists of the whole pool, and records carry a hash of what was ranked."""

import hashlib
import json

import numpy as np
import pytest

import recbole_llm.registry as registry
from recbole_llm.data import protocols as protocols_module
from recbole_llm.data.candidates import CandidateSet
from recbole_llm.data.protocol import group_by_user
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.quick_start import evaluate, train
from tests.plugin_models import FirstSlotWins, ItemIdScorer, SequenceOracle

UNIFORM8 = {"type": "uniform", "size": 8}


@pytest.fixture(autouse=True)
def test_models(monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})
    for cls in (ItemIdScorer, SequenceOracle, FirstSlotWins):
        registry.register_model(cls)


def lists_of(trained, protocol) -> dict[str, list[str]]:
    """user token -> candidate item tokens, read back from the loader the trainer evaluates."""
    (label,) = evaluate(trained, [protocol]).test
    loader = trained.test_loaders[label]
    ds = trained.split.dataset
    users = np.unique(loader._dataset.inter_feat[ds.uid_field].numpy())
    cands = loader.protocol.candidates[users].numpy()
    return {
        str(u): list(ds.id2token(ds.iid_field, row))
        for u, row in zip(ds.id2token(ds.uid_field, users), cands)
    }


def test_lists_do_not_depend_on_row_order_or_id_mapping(tiny, tmp_path):
    """The same interactions in another row order get other internal ids, not other lists."""
    before = train("ItemIdScorer", "tiny", config_dict=tiny)
    first = lists_of(before, UNIFORM8)
    inter = tmp_path / "data" / "tiny" / "tiny.inter"
    header, *rows = inter.read_text().splitlines()
    np.random.default_rng(0).shuffle(rows)
    inter.write_text("\n".join([header, *rows]) + "\n")
    other = {**tiny, "candidates_dir": str(tmp_path / "other-candidates")}
    trained = train("ItemIdScorer", "tiny", config_dict=other)
    field = trained.split.dataset.iid_field
    mapping = [list(t.split.dataset.field2id_token[field]) for t in (before, trained)]
    assert mapping[0] != mapping[1], "the shuffled file must give other ids, or this test shows nothing"
    assert lists_of(trained, UNIFORM8) == first


def test_a_user_sample_ranks_the_lists_of_the_whole_pool(tiny):
    everyone = lists_of(train("ItemIdScorer", "tiny", config_dict=tiny), UNIFORM8)
    some = lists_of(train("ItemIdScorer", "tiny", config_dict={**tiny, "eval_users": 5}), UNIFORM8)
    fewer = lists_of(train("ItemIdScorer", "tiny", config_dict={**tiny, "eval_users": 3}), UNIFORM8)
    assert len(some) == 5 and set(fewer) < set(some)
    assert all(everyone[u] == some[u] for u in some)


def test_sampler_version_is_part_of_the_stored_sets_key(tiny, tmp_path, monkeypatch):
    evaluate(train("ItemIdScorer", "tiny", config_dict=tiny), [UNIFORM8])
    monkeypatch.setattr(protocols_module, "SAMPLER_VERSION", protocols_module.SAMPLER_VERSION + 1)
    evaluate(train("ItemIdScorer", "tiny", config_dict=tiny), [UNIFORM8])
    stored = sorted((tmp_path / "candidates" / "tiny").glob("uniform8-*.json"))
    assert len(stored) == 2
    assert {json.loads(p.read_text())["sampler_version"] for p in stored} == {2, 3}


def test_result_carries_the_content_hash_of_the_ranked_lists(tiny, tmp_path):
    result = evaluate(train("ItemIdScorer", "tiny", config_dict={**tiny, "eval_users": 4}), [UNIFORM8])
    record = result.lists["uniform8-4u-s2020"]
    (stored,) = (tmp_path / "candidates" / "tiny").glob("uniform8-*.tsv")
    whole = CandidateSet.read(stored)
    assert record["set_sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert record["set_users"] == 12 and record["n_users"] == 4
    ranked = lists_of(train("ItemIdScorer", "tiny", config_dict={**tiny, "eval_users": 4}), UNIFORM8)
    text = "".join(f"{u}\t{' '.join(ranked[u])}\n" for u in sorted(ranked))
    assert record["lists_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert all(whole.subset([u]).items[0] == ranked[u] for u in ranked)


def write_file_protocol(tmp_path, trained, n_users: int) -> str:
    """A candidate file listing `n_users` users, the ground truth always in the last slot."""
    ds = trained.split.dataset
    truth = group_by_user(*trained.split.test_pairs)
    lines = []
    for u in sorted(truth)[:n_users]:
        others = [i for i in range(1, ds.item_num) if i != truth[u][0]][:5]
        tokens = ds.id2token(ds.iid_field, [*others, truth[u][0]])
        lines.append(f"{ds.id2token(ds.uid_field, u)}\t{' '.join(tokens)}\n")
    path = tmp_path / "last.tsv"
    path.write_text("".join(lines))
    return str(path)


def test_file_protocol_samples_among_listed_users_and_refuses_fewer(tiny, tmp_path):
    path = write_file_protocol(tmp_path, train("ItemIdScorer", "tiny", config_dict=tiny), 6)
    trained = train("ItemIdScorer", "tiny", config_dict={**tiny, "eval_users": 4})
    assert evaluate(trained, [{"type": "file", "path": path}]).n_users["file-last-4u-s2020"] == 4
    with pytest.raises(RecBoleLLMError, match="eval_users=7, but only 6 users"):
        evaluate(trained, [{"type": "file", "path": path, "eval_users": 7}])


def test_file_lists_are_shuffled_before_a_position_biased_model_sees_them(tiny, tmp_path):
    path = write_file_protocol(tmp_path, train("ItemIdScorer", "tiny", config_dict=tiny), 12)
    as_written = {"type": "file", "path": path, "shuffle": False}
    trained = train("FirstSlotWins", "tiny", config_dict={**tiny, "candidates": as_written})
    as_written = evaluate(trained).test["file-last"]
    assert as_written["ndcg@5"] == 0.0, "ground truth last of 6: the biased model never ranks it in the top 5"
    shuffled = evaluate(trained, [{"type": "file", "path": path}]).test["file-last-s2020"]
    slots = [row.index(t) for row, t in _rows_and_truth(trained, "file-last-s2020")]
    assert len(set(slots)) > 1 and shuffled["ndcg@5"] > 0
    assert shuffled["recall@1"] == pytest.approx(np.mean([s == 0 for s in slots]))


def _rows_and_truth(trained, label):
    loader = trained.test_loaders[label]
    truth = group_by_user(*trained.split.test_pairs)
    users = np.unique(loader._dataset.inter_feat[trained.split.dataset.uid_field].numpy())
    return [(loader.protocol.candidates[u].tolist(), int(truth[u][0])) for u in users]


def test_list_only_models_are_refused_under_full_before_any_data_is_loaded(tiny, monkeypatch):
    import recbole_llm.quick_start as quick_start

    monkeypatch.setattr(quick_start, "load_split", lambda config: pytest.fail("data loaded"))
    with pytest.raises(RecBoleLLMError, match="FirstSlotWins ranks candidate lists.*'full'"):
        train("FirstSlotWins", "tiny", config_dict=tiny, protocols=[UNIFORM8, {"type": "full"}])


def test_impossible_candidate_size_fails_before_training(tiny, monkeypatch):
    from recbole.trainer import Trainer

    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("trained before the lists were drawn"))
    with pytest.raises(RecBoleLLMError, match="smaller candidates.size"):
        train("ItemIdScorer", "tiny", config_dict={**tiny, "candidates": {"type": "uniform", "size": 39}})


def test_unknown_ranking_mode_fails_before_data_or_llm_loading(tiny, monkeypatch):
    import recbole_llm.quick_start as quick_start

    monkeypatch.setattr(quick_start, "load_split", lambda config: pytest.fail("data loaded"))
    with pytest.raises(RecBoleLLMError, match="Unknown ranking_mode 'verbaliser'.*Did you mean: verbalizer"):
        train("LLMRanker", "tiny", config_dict={**tiny, "ranking_mode": "verbaliser", "eval_users": 4})
    with pytest.raises(RecBoleLLMError, match="item_text.*titel"):
        train("LLMRanker", "tiny", config_dict={**tiny, "item_text": "{titel}", "eval_users": 4})


def test_models_with_nothing_to_train_skip_fitting_and_validation(tiny):
    trained = train("Pop", "tiny", config_dict={**tiny, "epochs": 5})
    assert trained.epochs_run == 0 and trained.best_valid is None


def test_protocols_evaluated_in_one_run_keep_their_own_lists(tiny):
    """Each protocol of a run is scored on its own lists, as if it were the only one."""
    together = evaluate(train("ItemIdScorer", "tiny", config_dict=tiny, protocols=["full", UNIFORM8]))
    alone = {
        label: evaluate(train("ItemIdScorer", "tiny", config_dict=tiny, protocols=[block])).test[label]
        for label, block in (("full", "full"), ("uniform8-s2020", UNIFORM8))
    }
    assert together.test == alone
    assert together.test["full"] != together.test["uniform8-s2020"]
    assert together.lists["full"]["lists_sha256"] != together.lists["uniform8-s2020"]["lists_sha256"]


def training_counts_from_file(path) -> tuple[dict[str, int], dict[str, str]]:
    """Item training counts and each user's test item, from the raw .inter file (leave-one-out by time)."""
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    by_user: dict[str, list[tuple[float, str]]] = {}
    for user, item, time in rows:
        by_user.setdefault(user, []).append((float(time), item))
    counts: dict[str, int] = {}
    test: dict[str, str] = {}
    for user, events in by_user.items():
        items = [i for _, i in sorted(events)]
        test[user] = items[-1]
        for item in set(items[:-2]):
            counts[item] = counts.get(item, 0) + 1
    return counts, test


def test_cold_item_protocol_keeps_the_cases_with_rare_ground_truth_and_their_lists(tiny, tmp_path):
    counts, test = training_counts_from_file(tmp_path / "data" / "tiny" / "tiny.inter")
    threshold = sorted(counts.get(test[u], 0) for u in test)[len(test) // 2]
    expected = sorted(u for u in test if counts.get(test[u], 0) <= threshold)
    assert 0 < len(expected) < len(test), "the threshold must split the users, or this test shows nothing"
    cold = {**UNIFORM8, "cold_items": threshold}
    trained = train("ItemIdScorer", "tiny", config_dict=tiny)
    result = evaluate(trained, [cold, UNIFORM8])
    label = f"uniform8-cold{threshold}-s2020"
    assert result.n_users[label] == len(expected)
    cold_lists = lists_of(trained, cold)
    assert sorted(cold_lists) == expected
    everyone = lists_of(trained, UNIFORM8)
    assert all(everyone[u] == cold_lists[u] for u in expected), "the same lists as the whole protocol"
    assert result.lists[label]["set_sha256"] == result.lists["uniform8-s2020"]["set_sha256"]
