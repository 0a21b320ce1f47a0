"""LLMListwiseRanker (ALRO: a LoRA-tuned list-wise ranker) on a tiny random Llama: the teacher-forced
scorer against full forwards, the SFT loss against a slow per-row reference, the label logits against
the full-vocabulary logits, ALRO's total against its recomputed terms, frozen base weights, a learnable
toy task, generation and parsing through the adapter, and the settings refused before any loading."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from recbole_llm.benchmark import suite as suite_module
from recbole_llm.benchmark.suite import load_suite, plan, run_suite
from recbole_llm.config import PROPERTIES
from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm import listwise_losses
from recbole_llm.llm.parsing import parse_ranking
from recbole_llm.llm.prompts import candidate_labels
from recbole_llm.quick_start import run, train

pytest.importorskip("transformers")
pytest.importorskip("peft")

from recbole_llm.llm.backends.hf import load_model  # noqa: E402
from recbole_llm.llm.scorer import LabelScorer  # noqa: E402
from recbole_llm.models.llm.finetuned import adapter_folder  # noqa: E402
from tests.llm_fixtures import (  # noqa: E402
    base_params,
    finetune_settings,
    lora_params,
    perturb_adapter,
    train_batch,
    write_rated_dataset,
)

N = 4  # candidates per list: the target + 3 negatives
LABEL = f"uniform{N}-s2020"


@pytest.fixture
def settings(tiny, tiny_llama, tmp_path):
    return finetune_settings(tiny, tiny_llama, tmp_path, N, max_new_tokens=16)


def tuned(settings, **change):
    model = train("LLMListwiseRanker", "tiny", config_dict={**settings, **change}, saved=False)
    perturb_adapter(model.model)
    model.model.train()
    return model, next(iter(model.split.train))[:4]


def reference(model, batch):
    """Per row, independently of the model's answer building: the prompt's tokens, the answer's
    (the labels, target first, then the others in shown order, " > "-joined, then end-of-sequence),
    the answer text, and the full-vocabulary logits [answer length, V] of one forward over both."""
    sequences, lengths = batch[model.ITEM_SEQ].numpy(), batch[model.ITEM_SEQ_LEN].numpy()
    targets = batch[model.POS_ITEM_ID].numpy()
    lists = model.training_lists(sequences, lengths, targets)
    tokenizer, llm, labels = model.backend.tokenizer, model.scorer.model, candidate_labels(N)
    rows = []
    for s, n, items, target in zip(sequences, lengths, lists, targets):
        slots = [int(np.flatnonzero(items == target)[0])] + [k for k in range(N) if items[k] != target]
        text = " > ".join(labels[k] for k in slots)  # the byte tokenizer has no " A": labels start bare
        answer = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        prompt = model.backend.encode(model.mode.prompt(model.training_request(s, n, items)))
        logits = llm(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1]
        rows.append((items, target, slots, text, answer, logits))
    return rows


def test_teacher_forced_logits_equal_one_full_forward_per_row(tiny_llama):
    tokenizer, model = load_model(tiny_llama, None, "float32")
    scorer = LabelScorer(model, tokenizer.pad_token_id)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    answers = [[20, 21, 22], [23, 24, 25, 26, 27], [28]]
    got = scorer.teacher_forced(prompts, answers)  # one left-padded batch
    for p, a, logits in zip(prompts, answers, got):
        want = model(torch.tensor([p + a])).logits[0, len(p) - 1 : -1]
        assert logits.shape == want.shape and torch.allclose(logits, want, atol=1e-5, rtol=0)


def test_the_sft_loss_equals_a_slow_per_row_reference(settings):
    trained, batch = tuned(settings, loss_type="sft")
    model = trained.model
    state = model.generator.get_state()
    loss = model.calculate_loss(batch)
    model.generator.set_state(state)
    rows = reference(model, batch)
    labels = candidate_labels(N)
    for items, _, slots, text, _, _ in rows:
        # The answer is what the listwise mode's parser reads as the target first, the rest in shown order.
        assert parse_ranking(text, labels, [model.texts[i] for i in items]).order == slots
    logits = torch.cat([r[5] for r in rows])
    tokens = torch.tensor([t for r in rows for t in r[4]])
    assert loss.requires_grad
    assert torch.allclose(loss, F.cross_entropy(logits, tokens), atol=1e-5, rtol=0)


def test_the_label_logits_are_the_full_vocabulary_logits_at_the_label_positions(settings):
    trained, batch = tuned(settings, loss_type="sft")
    model = trained.model
    sequences, lengths = batch[model.ITEM_SEQ].numpy(), batch[model.ITEM_SEQ_LEN].numpy()
    targets = batch[model.POS_ITEM_ID].numpy()
    state = model.generator.get_state()
    lists = model.training_lists(sequences, lengths, targets)
    ranked = np.stack([[t] + [i for i in items if i != t] for items, t in zip(lists, targets)])
    _, label_logits = model.teacher_forced(sequences, lengths, lists, ranked)
    assert label_logits.shape == (4, N, N)
    model.generator.set_state(state)
    tokenizer = model.backend.tokenizer
    label_ids = [tokenizer.convert_tokens_to_ids(label) for label in candidate_labels(N)]
    for got, (_, _, _, _, answer, logits) in zip(label_logits, reference(model, batch)):
        positions = [k for k, token in enumerate(answer) if token in label_ids]
        assert len(positions) == N
        assert torch.allclose(got, logits[positions][:, label_ids], atol=1e-5, rtol=0)


def test_first_label_inference_scores_the_label_logits_that_the_answers_first_token_trains(settings):
    trained, batch = tuned(settings, loss_type="sft", listwise_inference="first_label")
    model = trained.model.eval()  # no LoRA dropout, as at evaluation
    sequences, lengths = batch[model.ITEM_SEQ].numpy(), batch[model.ITEM_SEQ_LEN].numpy()
    targets = batch[model.POS_ITEM_ID].numpy()
    lists = model.training_lists(sequences, lengths, targets)
    ranked = np.stack([[t] + [i for i in items if i != t] for items, t in zip(lists, targets)])
    with torch.no_grad():
        _, label_logits = model.teacher_forced(sequences, lengths, lists, ranked)
    requests = [model.training_request(s, n, items) for s, n, items in zip(sequences, lengths, lists)]
    scores = model.mode.score(requests)  # through the backend: shared-prefix KV cache, no generation
    assert model.mode.report()["requests"] == 4 and "parse_failure_rate" not in model.mode.report()
    for got, want in zip(scores, label_logits[:, 0]):  # answer position 0: the first label written
        assert np.allclose(got, want.numpy(), atol=1e-4, rtol=0), (got, want)


def test_the_alro_loss_is_sft_plus_weighted_lambda_and_permutation_terms(settings):
    trained, batch = tuned(settings, alro_alpha=0.3, alro_beta=0.2, alro_gamma=3.0)
    model = trained.model
    state = model.generator.get_state()
    total = model.calculate_loss(batch)
    model.generator.set_state(state)
    sequences, lengths = batch[model.ITEM_SEQ].numpy(), batch[model.ITEM_SEQ_LEN].numpy()
    rows = reference(model, batch)  # draws the lists as calculate_loss does
    labels = candidate_labels(N)
    label_ids = [model.backend.tokenizer.convert_tokens_to_ids(label) for label in labels]

    def label_logits(answer, logits):
        return logits[[k for k, t in enumerate(answer) if t in label_ids]][:, label_ids]

    sft = F.cross_entropy(torch.cat([r[5] for r in rows]), torch.tensor([t for r in rows for t in r[4]]))
    view_a = torch.stack([label_logits(r[4], r[5]) for r in rows])
    gains = torch.tensor(np.stack([r[0] == r[1] for r in rows]), dtype=torch.float32)
    lambda_loss = listwise_losses.soft_lambda_loss(view_a, gains, gamma=3.0)
    # The second view: each row shown in a permutation drawn next, its answer the same items in the
    # same order (target first, then view a's order), written with view b's labels.
    perms = torch.stack([torch.randperm(N, generator=model.generator) for _ in rows])
    llm, tokenizer, view_b = model.scorer.model, model.backend.tokenizer, []
    for s, n, (items, _, slots, _, _, _), perm in zip(sequences, lengths, rows, perms.numpy()):
        shown = items[perm]
        order = [int(np.flatnonzero(shown == items[k])[0]) for k in slots]
        text = " > ".join(labels[k] for k in order)
        answer = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        prompt = model.backend.encode(model.mode.prompt(model.training_request(s, n, shown)))
        logits = llm(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1]
        view_b.append(label_logits(answer, logits))
    perm_loss = listwise_losses.permutation_sensitive_loss(view_a, torch.stack(view_b), perms)
    assert lambda_loss > 0 and perm_loss > 0
    assert torch.allclose(total, sft + 0.3 * lambda_loss + 0.2 * perm_loss, atol=1e-5, rtol=0)


def test_only_the_adapter_trains_and_the_base_weights_stay_bitwise(settings):
    trained, batch = tuned(settings)
    model = trained.model
    base, adapter = base_params(model), lora_params(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    assert all(torch.equal(base[k], v) for k, v in base_params(model).items())
    assert all(not torch.equal(adapter[k], v) for k, v in lora_params(model).items())
    assert set(model.state_dict()) == set(adapter)


def test_a_few_steps_learn_a_toy_task_far_above_chance(settings):
    """Training lists with the target always at one label: the answer's first label becomes it. Read
    from the label logits at the first answer position, not from generated text: the tiny random
    Llama's logits span well under one nat (tied 0.02-scale embeddings, which LoRA does not train), so
    its greedy answers are one repeated token whatever the adapter learns. Its SFT loss alone does not
    move the first label in 40 steps (every label follows a space somewhere in the answer); ALRO's
    lambda loss, weighted up and sharpened here, does in 15."""
    tuning = {**settings, "alro_alpha": 10.0, "alro_gamma": 20.0}
    trained = train("LLMListwiseRanker", "tiny", config_dict=tuning, saved=False)
    model = trained.model
    batch = next(iter(trained.split.train))[:16]
    sequences, lengths = batch[model.ITEM_SEQ].numpy(), batch[model.ITEM_SEQ_LEN].numpy()
    targets = batch[model.POS_ITEM_ID].numpy()
    lists = model.training_lists(sequences, lengths, targets)
    ranked = np.stack([[t] + [i for i in items if i != t] for items, t in zip(lists, targets)])

    def first_label_logits() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return model.teacher_forced(sequences, lengths, lists, ranked)[1][:, 0]

    slot = int(first_label_logits().mean(0).argmin())  # the label the untrained model likes least first
    for row, target in zip(lists, targets):
        k = int(np.flatnonzero(row == target)[0])
        row[[k, slot]] = row[[slot, k]]
    ranked = np.stack([[t] + [i for i in items if i != t] for items, t in zip(lists, targets)])
    model.training_lists = lambda *_: lists.copy()
    before = float((first_label_logits().argmax(1) == slot).float().mean())
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    for _ in range(20):
        model.train()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    after = float((first_label_logits().argmax(1) == slot).float().mean())
    assert before <= 0.25 and after >= 0.9, (before, after)  # chance: 1/4


def test_evaluation_generates_and_parses_through_the_adapter(settings):
    result = run("LLMListwiseRanker", "tiny", config_dict={**settings, "epochs": 1, "learning_rate": 1e-2})
    report = result.reports[LABEL]
    assert report["answers"] == report["requests"] > 0
    assert 0.0 <= report["parse_failure_rate"] <= 1.0 and "mean_recovered" in report
    assert result.trained.best_valid is not None


def test_the_yaml_defaults_are_alros():
    defaults = yaml.safe_load((PROPERTIES / "model" / "LLMListwiseRanker.yaml").read_text())
    assert defaults["loss_type"] == "alro" and defaults["ranking_mode"] == "listwise"
    assert defaults["alro_alpha"] == listwise_losses.ALRO_ALPHA
    assert defaults["alro_beta"] == listwise_losses.ALRO_BETA
    assert defaults["alro_gamma"] == listwise_losses.ALRO_GAMMA


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ranking_mode": "verbalizer"}, "set ranking_mode: listwise"),
        ({"loss_type": "alor"}, "Unknown loss_type 'alor'.*alro"),
        ({"alro_alpha": -0.1}, "alro_alpha weighs a loss term"),
        ({"alro_beta": -1}, "alro_beta weighs a loss term"),
        ({"alro_gamma": 0}, "alro_gamma must be a number > 0"),
        ({"train_num_negatives": 26}, "set train_num_negatives to at most 25"),
        ({"label_style": "numbers", "train_num_negatives": 9}, "set train_num_negatives to at most 8"),
        ({"llm_backend": "openai"}, "set llm_backend: hf"),
        ({"train_target": "grade"}, "Unknown train_target 'grade'.*graded"),
        ({"train_target": "graded"}, "train_target: graded reads the rating field 'rating'"),
        ({"listwise_inference": "first"}, "Unknown listwise_inference 'first'.*first_label"),
    ],
)
def test_settings_it_cannot_use_fail_before_any_loading(settings, monkeypatch, change, message):
    monkeypatch.setattr("recbole_llm.quick_start.load_split", lambda config: pytest.fail("data was loaded"))
    with pytest.raises(RecBoleLLMError, match=message):
        train("LLMListwiseRanker", "tiny", config_dict={**settings, **change}, saved=False)


@pytest.mark.parametrize("alpha, beta, forwards", [(0.0, 0.0, 1), (0.3, 0.0, 1), (0.0, 0.2, 2)])
def test_an_ablated_term_costs_no_forward(settings, alpha, beta, forwards):
    """SFT+SLL (beta 0) and SFT alone under loss_type alro skip the permuted view's forward."""
    trained, batch = tuned(settings, alro_alpha=alpha, alro_beta=beta)
    model = trained.model
    calls, run = [], model.scorer.teacher_forced
    model.scorer.teacher_forced = lambda *args: calls.append(1) or run(*args)
    state = model.generator.get_state()
    total = model.calculate_loss(batch)
    assert len(calls) == forwards
    model.generator.set_state(state)
    model.loss_type = "sft"
    sft = model.calculate_loss(batch)
    assert (total > sft + 1e-6) if alpha or beta else torch.equal(total, sft)


def test_graded_training_lists_are_the_users_next_rated_training_items(settings, tmp_path):
    """ALRO's graded target, against the .inter file read by hand: a row's list is its target and the
    user's next training items (leave-one-out keeps the last two for validation and test), gains their
    ratings, filled with items the user never rated (gain 0) where the sequence ends sooner."""
    write_rated_dataset(tmp_path / "data")
    rows = (tmp_path / "data" / "rated" / "rated.inter").read_text().splitlines()[1:]
    by_user: dict[str, list[tuple[str, float]]] = {}
    for line in rows:  # written in time order
        user, item, rating, _ = line.split("\t")
        by_user.setdefault(user, []).append((item, float(rating)))
    config = {
        **settings,
        "train_target": "graded",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    }
    trained = train("LLMListwiseRanker", "rated", config_dict=config, saved=False)
    model, ds = trained.model, trained.split.dataset
    batch = train_batch(trained, 32)
    users, targets = batch[model.USER_ID].numpy(), batch[model.POS_ITEM_ID].numpy()
    lists, gains = model.graded_lists(
        users, batch[model.ITEM_SEQ].numpy(), batch[model.ITEM_SEQ_LEN].numpy(), targets
    )
    short = 0
    for user, target, items, item_gains in zip(users, targets, lists, gains):
        training = by_user[ds.id2token(ds.uid_field, user)][:-2]
        tokens = [t for t, _ in training]
        p = tokens.index(ds.id2token(ds.iid_field, target))
        want = dict(training[p : p + N])
        shown = dict(zip(ds.id2token(ds.iid_field, items), item_gains.tolist()))
        assert len(shown) == N and {t: shown[t] for t in want} == want
        fill = [t for t in shown if t not in want]
        assert all(shown[t] == 0 and t not in tokens for t in fill)
        short += len(want) < N
    assert 0 < short < len(users)  # both kinds of rows were checked
    model.train()
    loss = model.calculate_loss(batch[:4])
    assert loss.requires_grad and torch.isfinite(loss)


def ft_suite(tmp_path, settings, models) -> Path:
    config = {k: v for k, v in settings.items() if k != "candidates_dir"}
    body = {
        "name": "ft",
        "dataset": "tiny",
        "config": {**config, "learning_rate": 1e-2, "loss_type": "sft"},
        "protocols": [{"type": "uniform", "size": N}],
        "models": models,
        "output": "out",
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_a_suite_row_tests_the_adapter_an_earlier_row_trained(settings, tmp_path):
    first_label = {"listwise_inference": "first_label"}
    path = ft_suite(
        tmp_path,
        settings,
        [
            {"model": "LLMListwiseRanker", "name": "SFT", "config": {"epochs": 1}},
            {"model": "LLMListwiseRanker", "name": "SFT-FIRST", "adapter_from": "SFT", "config": first_label},
        ],
    )
    run_suite(path)
    source = json.loads((tmp_path / "out" / f"SFT__{LABEL}.json").read_text())
    tested = json.loads((tmp_path / "out" / f"SFT-FIRST__{LABEL}.json").read_text())
    folder = adapter_folder(source["checkpoint"], "LLMListwiseRanker")
    assert source["epochs_run"] == 1 and tested["epochs_run"] == 0
    assert tested["adapter_from"] == {"model": "SFT", "adapter_path": str(folder)}
    direct = run(
        "LLMListwiseRanker", "tiny", config_dict={**settings, **first_label, "adapter_path": str(folder)}
    )
    assert tested["metrics"] == pytest.approx({k: float(v) for k, v in direct.test[LABEL].items()}, abs=1e-6)
    assert "parse_failure_rate" not in tested["cost"] and "parse_failure_rate" in source["cost"]

    suite = load_suite(path)
    runs = plan(suite)
    assert [suite_module._missing(suite, r) for r in runs] == [None, None]
    source["run_key"] = "retrained"  # as if SFT were trained again: the row testing its adapter is stale
    (tmp_path / "out" / f"SFT__{LABEL}.json").write_text(json.dumps(source))
    assert suite_module._missing(suite, runs[1]) == f"settings changed since SFT-FIRST__{LABEL}.json"


@pytest.mark.parametrize(
    "models, message",
    [
        ([{"model": "LLMListwiseRanker", "name": "FIRST", "adapter_from": "SFT"}], "not an earlier entry"),
        (
            [
                {"model": "LLMListwiseRanker", "name": "SFT"},
                {"model": "LLMListwiseRanker", "adapter_from": "SFt"},
            ],
            "Did you mean: SFT",
        ),
        (
            [
                {"model": "LLMRanker", "name": "zero-shot"},
                {"model": "LLMRanker", "adapter_from": "zero-shot"},
            ],
            "two entries of one fine-tuned ranker class",
        ),
    ],
)
def test_adapter_from_must_name_an_earlier_fine_tuned_entry(settings, tmp_path, models, message):
    with pytest.raises(RecBoleLLMError, match=message):
        run_suite(ft_suite(tmp_path, settings, models))


def test_on_ray_a_row_testing_an_adapter_runs_after_the_row_that_trains_it(settings, tmp_path, monkeypatch):
    waves = []
    monkeypatch.setattr(
        suite_module,
        "run_ray",
        lambda suite, runs, address: waves.append([r.entry["name"] for r, _ in runs]) or [],
    )
    models = [
        {"model": "LLMListwiseRanker", "name": "SFT"},
        {"model": "LLMListwiseRanker", "name": "SFT-FIRST", "adapter_from": "SFT"},
        {"model": "LLMListwiseRanker", "name": "ALRO", "config": {"loss_type": "alro"}},
    ]
    run_suite(ft_suite(tmp_path, settings, models), executor="ray")
    assert waves == [["SFT", "ALRO"], ["SFT-FIRST"]]
