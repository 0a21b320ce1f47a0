"""LLMVerbalizerRanker (a LoRA-tuned verbalizer) on a tiny random Llama: the differentiable scorer against
the hf backend, the loss against a slow per-prompt reference, frozen base weights, a learnable toy task,
the adapter's save/load round trip, and a response cache that never serves zero-shot answers to it."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm.backend import Prompt
from recbole_llm.quick_start import run, train

pytest.importorskip("transformers")
pytest.importorskip("peft")

from recbole_llm.llm.backends.hf import HFBackend, load_model  # noqa: E402
from recbole_llm.llm.scorer import LabelScorer  # noqa: E402
from recbole_llm.models.llm import finetuned  # noqa: E402
from recbole_llm.models.llm.finetuned import AdapterTrainer, adapter_folder  # noqa: E402
from tests.llm_fixtures import (  # noqa: E402
    base_params,
    finetune_settings,
    lora_params,
    perturb_adapter,
    train_batch,
)

N = 6  # candidates per list: the target + 5 negatives
LABEL = f"uniform{N}-s2020"


@pytest.fixture
def settings(tiny, tiny_llama, tmp_path):
    return finetune_settings(tiny, tiny_llama, tmp_path, N)


def test_scorer_logits_equal_the_backend_label_logits(tiny_llama):
    backend = HFBackend(model_id=tiny_llama, batch_size=2)
    system = "You rank movies for a user."
    prompts = [
        Prompt("History: Heat, Alien. Candidates: A. Up B. Cars C. Big", system, "Answer:"),
        Prompt("History: Heat, Alien. Candidates: A. Cars B. Up C. Big", system, "Answer:"),
        Prompt("History: Fargo. Candidates: A. Up B. Big C. Jaws", system, "Answer:"),
    ]
    labels = ["A", "B", "C"]
    want = torch.tensor([a.logits for a in backend.label_logits(prompts, labels)])  # prefix KV cache
    tokenizer, model = load_model(tiny_llama, None, "float32")  # a trainable copy of its own
    scorer = LabelScorer(model, tokenizer.pad_token_id)
    got = scorer([backend.encode(p) for p in prompts], backend.label_token_ids(labels))  # left-padded batch
    assert got.requires_grad and got.shape == (3, 3)
    assert torch.allclose(got.detach(), want, atol=1e-5, rtol=0)


def test_the_loss_equals_a_slow_per_prompt_reference(settings):
    trained = train("LLMVerbalizerRanker", "tiny", config_dict=settings, saved=False)
    model = trained.model
    perturb_adapter(model)
    model.train()
    batch = train_batch(trained, 4)
    state = model.generator.get_state()
    loss = model.calculate_loss(batch)
    # The reference: the same draws, then each prompt alone through the peft model, logits at its last
    # position, the labels' token ids gathered, cross-entropy against the target's label.
    model.generator.set_state(state)
    sequences, lengths = batch[model.ITEM_SEQ].numpy(), batch[model.ITEM_SEQ_LEN].numpy()
    targets = batch[model.POS_ITEM_ID].numpy()
    lists = model.training_lists(sequences, lengths, targets)
    tokenizer, llm = model.backend.tokenizer, model.scorer.model
    # The byte-level test tokenizer has no merges: " A" is two tokens, so labels are read bare ("A").
    label_ids = [tokenizer.convert_tokens_to_ids(label) for label in "ABCDEF"]
    losses = []
    for s, n, items, target in zip(sequences, lengths, lists, targets):
        assert len(set(items)) == N and target in items and not set(items[items != target]) & set(s[:n])
        ids = model.backend.encode(model.mode.prompt(model.training_request(s, n, items)))
        logits = llm(torch.tensor([ids])).logits[0, -1, label_ids]
        losses.append(F.cross_entropy(logits[None], torch.tensor([int(np.flatnonzero(items == target)[0])])))
    assert loss.requires_grad
    assert torch.allclose(loss, torch.stack(losses).mean(), atol=1e-5, rtol=0)


def test_only_the_adapter_trains_and_the_base_weights_stay_bitwise(settings):
    trained = train("LLMVerbalizerRanker", "tiny", config_dict=settings, saved=False)
    model = trained.model
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    assert any(".q_proj.lora_A" in k for k in trainable) and any(".v_proj.lora_B" in k for k in trainable)
    base, adapter = base_params(model), lora_params(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        model.calculate_loss(train_batch(trained, 4)).backward()
        optimizer.step()
    assert all(torch.equal(base[k], v) for k, v in base_params(model).items())
    assert all(not torch.equal(adapter[k], v) for k, v in lora_params(model).items())
    # Checkpoints hold the adapter only: the base LLM is the frozen model at llm_path.
    assert set(model.state_dict()) == set(adapter)


def test_a_few_steps_learn_a_toy_task_far_above_chance(settings):
    """Training lists with the target always at one label: learnable by the adapter in a few steps."""
    trained = train("LLMVerbalizerRanker", "tiny", config_dict=settings, saved=False)
    model = trained.model
    batch = train_batch(trained, 16)
    sequences, lengths = batch[model.ITEM_SEQ].numpy(), batch[model.ITEM_SEQ_LEN].numpy()
    targets = batch[model.POS_ITEM_ID].numpy()
    lists = model.training_lists(sequences, lengths, targets)

    def label_logits() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            requests = [model.training_request(s, n, items) for s, n, items in zip(sequences, lengths, lists)]
            return model.scorer(
                [model.backend.encode(model.mode.prompt(r)) for r in requests], model.label_ids
            )

    slot = int(label_logits().mean(0).argmin())  # the label the untrained model likes least
    for row, target in zip(lists, targets):
        k = int(np.flatnonzero(row == target)[0])
        row[[k, slot]] = row[[slot, k]]
    model.training_lists = lambda *_: lists
    before = float((label_logits().argmax(1) == slot).float().mean())
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    for _ in range(15):
        model.train()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    after = float((label_logits().argmax(1) == slot).float().mean())
    assert before <= 0.25 and after >= 0.9, (before, after)  # chance: 1/6


def test_gradient_accumulation_steps_as_one_batch_of_all_the_rows(settings, monkeypatch):
    """Two batches of 2 rows under gradient_accumulation_steps=2 move the adapter as one batch of 4
    rows does (plain SGD, so the step is the gradient itself); stepping after each batch does not.
    Free heap memory goes back to the OS after each optimiser step."""
    releases = []
    monkeypatch.setattr(finetuned, "release_free_heap", lambda: releases.append(1))
    sgd = {**settings, "learner": "sgd", "learning_rate": 0.5}
    adapters, totals, steps_released = [], [], []
    for steps, sizes in [(2, [2, 2]), (1, [4]), (1, [2, 2])]:
        trained = train(
            "LLMVerbalizerRanker",
            "tiny",
            config_dict={**sgd, "gradient_accumulation_steps": steps},
            saved=False,
        )
        perturb_adapter(trained.model)
        rows = train_batch(trained, 4)
        batches = [rows[:2], rows[2:]] if sizes == [2, 2] else [rows]
        releases.clear()
        totals.append(AdapterTrainer._train_epoch(trained.trainer, batches, 0))  # RecBole's loop, no budget
        steps_released.append(len(releases))
        adapters.append(lora_params(trained.model))
    accumulated, whole, stepwise = adapters
    assert all(torch.allclose(accumulated[k], whole[k], atol=1e-6, rtol=0) for k in whole)
    assert any(not torch.allclose(stepwise[k], whole[k], atol=1e-4, rtol=0) for k in whole)
    assert totals[0] == pytest.approx(2 * totals[1], rel=1e-5)  # the sum of the two batches' mean losses
    assert steps_released == [1, 1, 2]


def test_autocast_scores_near_float32_trains_float32_adapters_and_is_in_the_cache_key(settings):
    plain, fast = (
        train("LLMVerbalizerRanker", "tiny", config_dict={**settings, "llm_autocast": on}, saved=False).model
        for on in (False, True)
    )
    batch = next(iter(train("LLMVerbalizerRanker", "tiny", config_dict=settings, saved=False).split.train))[
        :4
    ]
    sequences, lengths = batch[plain.ITEM_SEQ].numpy(), batch[plain.ITEM_SEQ_LEN].numpy()
    lists = plain.training_lists(sequences, lengths, batch[plain.POS_ITEM_ID].numpy())
    encoded = [
        plain.backend.encode(plain.mode.prompt(plain.training_request(s, n, items)))
        for s, n, items in zip(sequences, lengths, lists)
    ]
    logits = []
    for model in (plain, fast):
        perturb_adapter(model)
        logits.append(model.scorer(encoded, model.label_ids))
    assert logits[1].dtype == torch.float32 and not torch.equal(logits[0], logits[1])  # bf16 matmuls
    assert torch.allclose(logits[0], logits[1], atol=0.05, rtol=0)
    logits[1].logsumexp(1).sum().backward()
    adapter = {k: p for k, p in fast.named_parameters() if p.requires_grad}
    assert all(
        p.dtype == torch.float32 and p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.values()
    )
    identities = [model.backend.inner.identity() for model in (plain, fast)]
    assert identities[0]["adapter"] == identities[1]["adapter"] and identities[0] != identities[1]


def test_training_validates_on_drawn_lists_and_the_saved_adapter_scores_identically(settings):
    result = run("LLMVerbalizerRanker", "tiny", config_dict={**settings, "epochs": 1, "learning_rate": 1e-2})
    trained = result.trained
    valid = trained.split.valid.protocol
    assert valid.label == f"uniform{N}-s2020" and valid.candidates.shape[1] == N
    assert trained.best_valid is not None and "ndcg@10" in trained.best_valid
    assert result.reports[LABEL]["users"] == result.n_users[LABEL], "validation's cost is not the test's"
    valid_items, test_items = dict(zip(*trained.split.valid_pairs)), dict(zip(*trained.split.test_pairs))
    for user, item in valid_items.items():  # the validation item, never the test item
        assert item in valid.candidates[user] and test_items[user] not in valid.candidates[user]
    folders = list(Path(settings["checkpoint_dir"]).glob("LLMVerbalizerRanker-adapter-*"))
    assert len(folders) == 1 and (folders[0] / "adapter_config.json").is_file()
    assert folders[0] == adapter_folder(trained.trainer.saved_model_file, "LLMVerbalizerRanker")
    assert any(v.abs().sum() > 0 for k, v in lora_params(trained.model).items() if "lora_B" in k)  # trained

    reloaded = run("LLMVerbalizerRanker", "tiny", config_dict={**settings, "adapter_path": str(folders[0])})
    assert reloaded.test == result.test
    report = reloaded.reports[LABEL]
    assert report["hits"] == report["requests"] and report["misses"] == 0  # same adapter, same cache key
    loader = trained.test_loaders[LABEL]
    interaction = next(iter(loader))[0]
    candidates = loader.protocol.candidates_for(interaction[trained.config["USER_ID_FIELD"]])
    scores = []
    for model in (trained.model, reloaded.trained.model):
        model.backend = model.backend.inner  # bypass the cache: compute both
        scores.append(model.predict_candidates(interaction, candidates))
    assert torch.equal(scores[0], scores[1])


def test_the_response_cache_never_serves_zero_shot_answers_to_an_adapter(settings):
    zero_shot = run("LLMRanker", "tiny", config_dict=settings, saved=False)
    tuned = run("LLMVerbalizerRanker", "tiny", config_dict=settings, saved=False)
    report = tuned.reports[LABEL]
    assert (
        zero_shot.reports[LABEL]["misses"] == report["misses"] == report["requests"] and report["hits"] == 0
    )
    # A fresh adapter (LoRA's B is zero) changes nothing: the same lists rank the same.
    assert tuned.test == zero_shot.test


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ranking_mode": "listwise"}, "set ranking_mode: verbalizer"),
        ({"llm_backend": "openai"}, "set llm_backend: hf"),
        ({"user_profile": True}, "user_profile or augment_items"),
        ({"lora_target_modules": "q_proj"}, "lora_target_modules must be a non-empty list"),
        ({"lora_r": 0}, "lora_r must be a positive integer"),
        ({"adapter_path": "nowhere"}, "holds no adapter_config.json"),
        ({"epochs": 1, "valid_candidates": None}, "early stopping needs validation lists"),
        ({"valid_candidates": {"type": "full"}}, "valid_candidates must be a uniform or popularity block"),
    ],
)
def test_settings_fine_tuning_cannot_use_fail_before_any_loading(settings, monkeypatch, change, message):
    monkeypatch.setattr("recbole_llm.quick_start.load_split", lambda config: pytest.fail("data was loaded"))
    with pytest.raises(RecBoleLLMError, match=message):
        train("LLMVerbalizerRanker", "tiny", config_dict={**settings, **change}, saved=False)


class Interrupted(Exception):
    """A kill right after the first epoch's resume state is written."""


def run_killed_after_first_epoch(monkeypatch, tuning: dict) -> None:
    """A fine-tuning stopped (Interrupted) right after its first epoch's resume state is written."""
    from recbole_llm.evaluation.resume import ResumableTraining

    save = ResumableTraining._save_resume_state

    def save_then_stop(self, epoch, generators, **partial):
        assert "model..generator" in generators  # the negatives' generator (root module: "") is resumed too
        save(self, epoch, generators)
        raise Interrupted

    with monkeypatch.context() as patched:
        patched.setattr(ResumableTraining, "_save_resume_state", save_then_stop)
        with pytest.raises(Interrupted):
            run("LLMVerbalizerRanker", "tiny", config_dict=tuning)


def test_a_killed_fine_tuning_resumes_and_ends_as_if_uninterrupted(settings, monkeypatch):
    tuning = {**settings, "epochs": 2, "learning_rate": 1e-2, "lora_dropout": 0.05, "checkpoint_steps": 0}
    reference = run("LLMVerbalizerRanker", "tiny", config_dict=tuning)
    run_killed_after_first_epoch(monkeypatch, tuning)
    resumed = run("LLMVerbalizerRanker", "tiny", config_dict=tuning)
    assert resumed.trained.trainer.start_epoch == 1
    assert resumed.trained.trainer.train_loss_dict == reference.trained.trainer.train_loss_dict
    assert resumed.test == reference.test


def test_a_fine_tuning_carried_to_a_fresh_checkout_gets_its_best_adapter_folder_back(
    settings, tmp_path, monkeypatch
):
    """Only the committed `resume_dir` survives: the best adapter, tested later and read by
    `adapter_from` entries, is rebuilt from the state, and training goes on from the latest weights."""
    from recbole_llm.evaluation.resume import ResumableTraining

    tuning = {**settings, "epochs": 2, "learning_rate": 1e-2, "checkpoint_steps": 0}
    tuning["resume_dir"] = str(tmp_path / "kept")
    reference = run(
        "LLMVerbalizerRanker", "tiny", config_dict={**tuning, "checkpoint_dir": str(tmp_path / "ref")}
    )
    run_killed_after_first_epoch(monkeypatch, tuning)
    shutil.rmtree(tuning["checkpoint_dir"])
    restored, resume = [], ResumableTraining.resume_checkpoint

    def spy(self, resume_file):
        resume(self, resume_file)
        restored.append(adapter_folder(self.saved_model_file, "LLMVerbalizerRanker"))

    monkeypatch.setattr(ResumableTraining, "resume_checkpoint", spy)
    resumed = run(
        "LLMVerbalizerRanker", "tiny", config_dict={**tuning, "checkpoint_dir": str(tmp_path / "new")}
    )
    assert restored[0].parent == tmp_path / "new" and (restored[0] / "adapter_config.json").is_file()
    assert resumed.trained.trainer.train_loss_dict == reference.trained.trainer.train_loss_dict
    assert resumed.test == reference.test


@pytest.mark.parametrize("kill_epoch, kill_batches", [(0, 4), (1, 2)])
def test_a_fine_tuning_killed_within_an_epoch_continues_after_its_last_saved_step(
    settings, monkeypatch, kill_epoch, kill_batches
):
    """Resume states every optimiser step (2 batches): the rerun replays the epoch's shuffle, trains
    only the batches the killed run had not, with the random states it had there (dropout, negatives),
    and ends where an uninterrupted run ends."""
    from recbole_llm.evaluation.resume import ResumableTraining
    from recbole_llm.models.llm.verbalizer_ft import LLMVerbalizerRanker

    tuning = {
        **settings,
        "epochs": 2,
        "learning_rate": 1e-2,
        "lora_dropout": 0.05,
        "train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "checkpoint_steps": 1,
        "train_examples_per_epoch": 12,  # 6 batches, 3 steps, resume states after steps 1 and 2
    }
    reference = run("LLMVerbalizerRanker", "tiny", config_dict=tuning)
    save, trained_batches = ResumableTraining._save_resume_state, []
    loss = LLMVerbalizerRanker.calculate_loss

    def save_then_stop(self, epoch, generators, rng=None, partial=None):
        save(self, epoch, generators, rng=rng, partial=partial)
        if partial is not None and epoch + 1 == kill_epoch and partial["batches"] == kill_batches:
            raise Interrupted

    def counted(self, interaction):
        trained_batches.append(1)
        return loss(self, interaction)

    with monkeypatch.context() as patched:
        patched.setattr(ResumableTraining, "_save_resume_state", save_then_stop)
        with pytest.raises(Interrupted):
            run("LLMVerbalizerRanker", "tiny", config_dict=tuning)
    monkeypatch.setattr(LLMVerbalizerRanker, "calculate_loss", counted)
    resumed = run("LLMVerbalizerRanker", "tiny", config_dict=tuning)
    trainer = resumed.trained.trainer
    assert trainer.start_epoch == kill_epoch
    assert len(trained_batches) == 6 * (2 - kill_epoch) - kill_batches
    assert trainer.train_loss_dict == pytest.approx(reference.trained.trainer.train_loss_dict, rel=1e-6)
    assert len(trainer.epoch_seconds) == 2  # the killed run's epochs and share of the epoch included
    adapter = {k: v for k, v in trainer.model.state_dict().items() if "lora_" in k}
    expected = {k: v for k, v in reference.trained.trainer.model.state_dict().items() if "lora_" in k}
    assert adapter and all(torch.equal(adapter[k], expected[k]) for k in expected)
    assert resumed.test == reference.test


def test_gradient_checkpointing_recomputes_each_layer_for_the_same_gradients_and_cache_key(settings):
    grads, forwards, identities = [], [], []
    for on in (False, True):
        config = {**settings, "gradient_checkpointing": on, "lora_dropout": 0.05}
        trained = train("LLMVerbalizerRanker", "tiny", config_dict=config, saved=False)
        model = trained.model
        perturb_adapter(model)
        (layer,) = [m for name, m in model.named_modules() if name.endswith("layers.0.self_attn")]
        calls = []
        layer.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        model.train()
        torch.manual_seed(0)  # LoRA dropout: recomputation must replay the same masks
        model.calculate_loss(train_batch(trained, 4)).backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
        forwards.append(len(calls))
        identities.append(model.backend.identity())
    assert forwards == [1, 2], "the layer's attention runs again in the backward pass"
    plain, recomputed = grads
    assert plain.keys() == recomputed.keys() and all("lora_" in k for k in plain)
    assert all(torch.allclose(plain[k], recomputed[k], atol=1e-6) for k in plain)
    assert identities[0] == identities[1]
