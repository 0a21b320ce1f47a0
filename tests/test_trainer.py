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
