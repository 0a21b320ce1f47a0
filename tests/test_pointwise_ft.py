"""LLMPointwiseRanker (LoRA-tuned yes/no questions, TALLRec) on a tiny random Llama: the loss against a
slow per-question reference on the zero-shot mode's own prompts, frozen base weights, AUC against a
brute-force count, a learnable toy task, rating labels, and the settings refused before any loading."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.evaluation.auc import candidate_auc
from recbole_llm.models.llm.modes import RankRequest
from recbole_llm.quick_start import run, train

pytest.importorskip("transformers")
pytest.importorskip("peft")

from recbole_llm.models.llm.finetuned import adapter_folder  # noqa: E402
from tests.llm_fixtures import (  # noqa: E402
    base_params,
    finetune_settings,
    lora_params,
    perturb_adapter,
    train_batch,
    write_rated_dataset,
)

N = 6  # candidates per test list: the target + 5 negatives
LABEL = f"uniform{N}-s2020"


@pytest.fixture
def settings(tiny, tiny_llama, tmp_path):
    return finetune_settings(tiny, tiny_llama, tmp_path, N, train_num_negatives=2)


def test_the_loss_equals_a_slow_per_question_reference_on_the_zero_shot_prompts(settings):
    trained = train("LLMPointwiseRanker", "tiny", config_dict=settings, saved=False)
    model = trained.model
    perturb_adapter(model)
    model.train()
    batch = train_batch(trained, 4)
    state = model.generator.get_state()
    loss = model.calculate_loss(batch)
    # The reference: the same draws; each question as the zero-shot mode asks it about one candidate of
    # a list, alone through the peft model; yes and no logits at the last position; cross-entropy.
    model.generator.set_state(state)
    rows, items, answers = model.training_questions(batch)
    sequences, lengths = batch[model.ITEM_SEQ].numpy(), batch[model.ITEM_SEQ_LEN].numpy()
    targets = batch[model.POS_ITEM_ID].numpy()
    assert list(rows) == [r for r in range(4) for _ in range(3)] and list(answers) == [0, 1, 1] * 4
    tokenizer, llm = model.backend.tokenizer, model.scorer.model
    # The byte-level test tokenizer has no merges: " Yes" and " No" start alike, so read bare "Y", "N".
    yes_no = [tokenizer.convert_tokens_to_ids(t) for t in "YN"]
    losses = []
    for r in range(4):
        s, n, asked = sequences[r], lengths[r], items[rows == r]
        assert asked[0] == targets[r] and len(set(asked)) == 3 and not set(asked[1:]) & set(s[:n])
        shown = RankRequest(model.history(s, n), tuple(model.texts[i] for i in asked))
        for text, answer in zip(shown.candidates, answers[rows == r]):
            ids = model.backend.encode(model.mode.prompt(shown, [text]))  # as Pointwise.score asks
            logits = llm(torch.tensor([ids])).logits[0, -1, yes_no]
            losses.append(F.cross_entropy(logits[None], torch.tensor([int(answer)])))
    assert loss.requires_grad
    assert torch.allclose(loss, torch.stack(losses).mean(), atol=1e-5, rtol=0)


def test_only_the_adapter_trains_and_the_base_weights_stay_bitwise(settings):
    trained = train("LLMPointwiseRanker", "tiny", config_dict=settings, saved=False)
    model = trained.model
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    base, adapter = base_params(model), lora_params(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        model.calculate_loss(train_batch(trained, 4)).backward()
        optimizer.step()
    assert all(torch.equal(base[k], v) for k, v in base_params(model).items())
    assert all(not torch.equal(adapter[k], v) for k, v in lora_params(model).items())
    assert set(model.state_dict()) == set(adapter)


def brute_force_auc(scores: np.ndarray, candidates: np.ndarray, target: int) -> float:
    truth = scores[list(candidates).index(target)]
    pairs = [(truth > s) + 0.5 * (truth == s) for s, c in zip(scores, candidates) if c != target]
    return sum(pairs) / len(pairs)


def test_auc_equals_a_brute_force_pairwise_count_ties_counting_half():
    scores = np.array(
        [[0.3, 0.1, 0.3, -2.0], [1.0, 1.0, 1.0, 1.0], [5.0, 4.0, 3.0, 2.0], [0.0, 1.0, 2.0, 3.0]]
    )
    candidates = np.array([[4, 7, 9, 2], [1, 2, 3, 4], [5, 6, 7, 8], [9, 8, 7, 6]])
    targets = np.array([4, 3, 8, 1])  # the last list lacks its target: no AUC
    got = candidate_auc(scores, candidates, targets)
    want = [brute_force_auc(s, c, t) for s, c, t in zip(scores[:3], candidates[:3], targets[:3])]
    assert np.allclose(got[:3], want) and np.isnan(got[3])
    assert np.allclose(want, [2.5 / 3, 0.5, 0.0])


def test_the_report_holds_the_users_mean_auc_of_the_scores_ranked(settings):
    result = run("LLMPointwiseRanker", "tiny", config_dict=settings, saved=False)
    model, loader = result.trained.model, result.trained.test_loaders[LABEL]
    per_user = []
    for batch in loader:  # the cache answers: the very scores the test ranked
        interaction = batch[0]
        candidates = loader.protocol.candidates_for(interaction[result.trained.config["USER_ID_FIELD"]])
        scores = model.predict_candidates(interaction, candidates).numpy()
        targets = interaction[model.POS_ITEM_ID].numpy()
        per_user += [brute_force_auc(s, c, t) for s, c, t in zip(scores, candidates.numpy(), targets)]
    report = model.evaluation_report()
    assert report["hits"] == report["requests"] == len(per_user) * N
    assert report["auc"] == pytest.approx(np.mean(per_user)) == result.reports[LABEL]["auc"]
    assert model.evaluation_report()["auc"] is None  # reset with the report


def test_the_trainer_fits_validates_and_saves_the_adapter(settings):
    result = run("LLMPointwiseRanker", "tiny", config_dict={**settings, "epochs": 1, "learning_rate": 1e-2})
    trained = result.trained
    assert trained.epochs_run == 1 and "ndcg@10" in trained.best_valid
    assert result.reports[LABEL]["users"] == result.n_users[LABEL], "validation's cost is not the test's"
    assert 0 <= result.reports[LABEL]["auc"] <= 1
    folders = list(Path(settings["checkpoint_dir"]).glob("LLMPointwiseRanker-adapter-*"))
    assert folders == [adapter_folder(trained.trainer.saved_model_file, "LLMPointwiseRanker")]
    assert any(v.abs().sum() > 0 for k, v in lora_params(trained.model).items() if "lora_B" in k)


def test_a_few_steps_on_a_learnable_toy_task_raise_auc_far_above_chance(settings):
    """Questions whose answer the item's text gives away ("Great ..." yes, "Dull ..." no)."""
    trained = train("LLMPointwiseRanker", "tiny", config_dict=settings, saved=False)
    model = trained.model
    batch = train_batch(trained, 8)
    rows, items, answers = np.repeat(np.arange(8), 3), np.arange(1, 25), np.tile([0, 1, 1], 8)  # 0: yes
    for item, answer in zip(items, answers):
        model.texts[item] = f"{'Dull' if answer else 'Great'} {item}"
    model.training_questions = lambda _: (rows, items, answers)
    sequences, lengths = batch[model.ITEM_SEQ].numpy(), batch[model.ITEM_SEQ_LEN].numpy()
    candidates = items.reshape(8, 3)

    def auc() -> float:
        model.eval()
        with torch.no_grad():
            requests = [model.training_request(sequences[r], lengths[r], [i]) for r, i in zip(rows, items)]
            logits = model.scorer(
                [model.backend.encode(model.mode.prompt(q)) for q in requests], model.label_ids
            )
        scores = (logits[:, 0] - logits[:, 1]).numpy().reshape(8, 3)
        return float(candidate_auc(scores, candidates, candidates[:, 0]).mean())

    before = auc()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    for _ in range(15):
        model.train()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    after = auc()
    assert after >= 0.9 and after - before >= 0.3, (before, after)


def test_rating_labels_say_yes_exactly_above_the_threshold(settings, tmp_path):
    write_rated_dataset(tmp_path / "data")
    rated = {
        **settings,
        "label_source": "rating",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    }
    trained = train("LLMPointwiseRanker", "rated", config_dict=rated, saved=False)
    model = trained.model
    hand_built = Interaction(
        {
            model.ITEM_SEQ: torch.tensor([[1, 2, 0], [3, 0, 0], [4, 5, 6], [7, 0, 0], [8, 9, 0]]),
            model.ITEM_SEQ_LEN: torch.tensor([2, 1, 3, 1, 2]),
            model.POS_ITEM_ID: torch.tensor([10, 11, 12, 13, 14]),
            "rating": torch.tensor([1.0, 3.0, 3.5, 4.0, 2.5]),
        }
    )
    rows, items, answers = model.training_questions(hand_built)
    assert list(rows) == [0, 1, 2, 3, 4] and list(items) == [10, 11, 12, 13, 14]
    assert list(answers) == [1, 1, 0, 0, 1]  # 0: yes, 1: no
    batch = train_batch(trained, 8)  # RecBole's rows carry their target's rating
    _, asked, answers = model.training_questions(batch)
    assert list(asked) == list(batch[model.POS_ITEM_ID].numpy())
    assert list(answers) == [0 if r > 3 else 1 for r in batch["rating"].numpy()]
    assert model.calculate_loss(batch).requires_grad


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ranking_mode": "verbalizer"}, "set ranking_mode: pointwise"),
        ({"label_source": "ratings"}, "Unknown label_source 'ratings'.*rating"),
        ({"label_source": "rating"}, "label_source: rating reads the rating field 'rating'"),
        ({"epochs": 1, "valid_candidates": None}, "early stopping needs validation lists"),
    ],
)
def test_settings_it_cannot_use_fail_before_any_loading(settings, monkeypatch, change, message):
    monkeypatch.setattr("recbole_llm.quick_start.load_split", lambda config: pytest.fail("data was loaded"))
    with pytest.raises(RecBoleLLMError, match=message):
        train("LLMPointwiseRanker", "tiny", config_dict={**settings, **change}, saved=False)
