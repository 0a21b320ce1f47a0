import pickle

import pytest
import torch

from recbole_llm.quick_start import train


def test_own_checkpoints_load_under_torch_weights_only_default(tiny):
    trained = train("BPR", "tiny", config_dict={**tiny, "epochs": 2})
    trainer, loader = trained.trainer, trained.split.valid
    with pytest.raises(pickle.UnpicklingError):
        torch.load(trainer.saved_model_file)  # what RecBole's own trainer would run into
    best = {k: v.clone() for k, v in trained.model.state_dict().items()}
    with torch.no_grad():
        for p in trained.model.parameters():
            p.add_(1.0)
    trainer.evaluate(loader, load_best_model=True)
    for k, v in trained.model.state_dict().items():
        assert torch.equal(v, best[k]), "evaluate(load_best_model=True) restored the best weights"
    trainer.resume_checkpoint(trainer.saved_model_file)
    assert trainer.start_epoch >= 1
    assert torch.load is torch.serialization.load, "the loading switch does not outlive the call"


def test_train_examples_per_epoch_trains_a_fresh_subset_of_batches_each_epoch(tiny, monkeypatch):
    from recbole.model.general_recommender.bpr import BPR

    seen: list[list[int]] = []
    original = BPR.calculate_loss

    def counting(self, interaction):
        seen.append(sorted(interaction[self.USER_ID].tolist()))
        return original(self, interaction)

    monkeypatch.setattr(BPR, "calculate_loss", counting)
    config = {**tiny, "epochs": 2, "train_batch_size": 8, "stopping_step": 5}
    full = train("BPR", "tiny", config_dict=config)
    batches_per_epoch = len(full.split.train)
    assert len(seen) == 2 * batches_per_epoch > 2 * 3
    seen.clear()
    trained = train("BPR", "tiny", config_dict={**config, "train_examples_per_epoch": 20})
    assert len(seen) == 2 * 3  # ceil(20 / 8) batches in each of the two epochs
    assert seen[:3] != seen[3:], "each epoch draws its own batches"
    assert len(trained.trainer.epoch_seconds) == 2


@pytest.mark.parametrize("detect", [False, True])
def test_training_runs_in_the_configured_anomaly_mode_whatever_recbole_set(tiny, monkeypatch, detect):
    """Importing RecBole's SINE (as importing any RecBole sequential model does) turns anomaly mode on
    for the process; a fit runs with `detect_anomaly` and leaves the process's mode as it found it."""
    import recbole.model.sequential_recommender.sine  # noqa: F401
    from recbole.model.general_recommender.bpr import BPR

    modes: list[bool] = []
    original = BPR.calculate_loss

    def recording(self, interaction):
        modes.append(torch.is_anomaly_enabled())
        return original(self, interaction)

    monkeypatch.setattr(BPR, "calculate_loss", recording)
    with torch.autograd.set_detect_anomaly(True):
        train("BPR", "tiny", config_dict={**tiny, "epochs": 1, "detect_anomaly": detect}, saved=False)
        assert torch.is_anomaly_enabled()
    assert modes and set(modes) == {detect}
