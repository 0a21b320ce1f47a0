"""A killed training run, rerun with the same command, ends exactly as an uninterrupted one."""

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from recbole.trainer import Trainer

from recbole_llm import registry
from recbole_llm.benchmark.expected import expected_scores
from recbole_llm.benchmark.suite import load_suite, run_suite
from recbole_llm.evaluation.resume import ResumableTraining
from recbole_llm.models.sequential.sasrec import SASRec
from recbole_llm.quick_start import run

KILLED_AFTER = 1  # the last epoch a killed run finishes


def sasrec_config() -> dict:
    # SCE draws sampled negatives from the model's own generator; dropout draws from torch's.
    return {"epochs": 4, "eval_step": 1, "stopping_step": 2, "loss_type": "SCE", "num_negatives": 5}


def run_killed(code: str) -> None:
    """Run `code` in a new interpreter that SIGKILLs itself once epoch KILLED_AFTER's state is saved."""
    prelude = textwrap.dedent(
        f"""
        import os, signal
        from recbole_llm.evaluation.resume import ResumableTraining
        save = ResumableTraining._save_resume_state
        def save_then_die(self, epoch, generators):
            save(self, epoch, generators)
            if epoch == {KILLED_AFTER}:
                os.kill(os.getpid(), signal.SIGKILL)
        ResumableTraining._save_resume_state = save_then_die
        """
    )
    done = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def resume_states(checkpoint_dir) -> list:
    return sorted((checkpoint_dir / "resume").glob("*"))


def test_killed_run_resumes_after_its_last_finished_epoch_and_ends_as_if_uninterrupted(tiny, tmp_path):
    config = {**tiny, **sasrec_config()}
    reference = run("SASRec", "tiny", config_dict=config)
    assert resume_states(tmp_path / "saved") == [], "a finished run leaves no resume state"

    run_killed(f"from recbole_llm.quick_start import run\nrun('SASRec', 'tiny', config_dict={config!r})\n")
    assert [p.suffix for p in resume_states(tmp_path / "saved")] == [".pth"]

    resumed = run("SASRec", "tiny", config_dict={**config, "state": "INFO"})  # output settings may differ
    assert resumed.trained.trainer.start_epoch == KILLED_AFTER + 1
    assert resumed.test == reference.test
    assert resumed.trained.best_valid == reference.trained.best_valid
    trainer, uninterrupted = resumed.trained.trainer, reference.trained.trainer
    assert trainer.train_loss_dict == uninterrupted.train_loss_dict
    assert trainer.cur_step == uninterrupted.cur_step
    assert len(trainer.epoch_seconds) == len(uninterrupted.epoch_seconds) == resumed.trained.epochs_run
    assert trainer.valid_curve == uninterrupted.valid_curve, "the learning curve survives the kill"
    assert [epoch for epoch, _ in trainer.valid_curve] == list(range(1, resumed.trained.epochs_run + 1))
    assert resume_states(tmp_path / "saved") == []


class Interrupted(BaseException):
    pass


def run_interrupted(monkeypatch, model: str, config: dict) -> None:
    """Run in this process, stopped by an exception (like Ctrl-C) once epoch KILLED_AFTER's state is saved."""
    save = ResumableTraining._save_resume_state

    def save_then_stop(self, epoch, generators):
        save(self, epoch, generators)
        if epoch == KILLED_AFTER:
            raise Interrupted

    with monkeypatch.context() as patched:
        patched.setattr(ResumableTraining, "_save_resume_state", save_then_stop)
        with pytest.raises(Interrupted):
            run(model, "tiny", config_dict=config)


def test_other_settings_and_resume_false_start_afresh(tiny, tmp_path, monkeypatch):
    config = {**tiny, **sasrec_config()}
    run_interrupted(monkeypatch, "SASRec", config)
    [state] = resume_states(tmp_path / "saved")  # only a finished fit removes its state

    other = run("SASRec", "tiny", config_dict={**config, "learning_rate": 0.01})
    assert other.trained.trainer.start_epoch == 0
    assert resume_states(tmp_path / "saved") == [state], "another command's state is left alone"

    fresh = run("SASRec", "tiny", config_dict={**config, "resume": False})
    assert fresh.trained.trainer.start_epoch == 0 and fresh.trained.epochs_run > KILLED_AFTER + 1
    assert resume_states(tmp_path / "saved") == []


def test_a_resume_state_carried_to_a_fresh_checkout_resumes_without_its_checkpoint_dir(
    tiny, tmp_path, monkeypatch
):
    """A committed `resume_dir` is all a later session has: the best weights so far travel in the state."""
    config = {**tiny, **sasrec_config(), "resume_dir": str(tmp_path / "kept")}
    reference = run("SASRec", "tiny", config_dict={**config, "checkpoint_dir": str(tmp_path / "reference")})
    run_interrupted(monkeypatch, "SASRec", config)
    [state] = (tmp_path / "kept").glob("SASRec-*.pth")
    [best_file] = (tmp_path / "saved").glob("SASRec-*.pth")
    carried = torch.load(state, weights_only=False)["resume"]["best_checkpoint"]
    on_disk = torch.load(best_file, weights_only=False)
    assert carried["epoch"] == on_disk["epoch"]
    assert all(torch.equal(carried["state_dict"][k], v) for k, v in on_disk["state_dict"].items())
    shutil.rmtree(tmp_path / "saved")  # the session ended: only the resume_dir survived

    restored = []
    resume_checkpoint = ResumableTraining.resume_checkpoint

    def spy(self, resume_file):
        resume_checkpoint(self, resume_file)
        restored.append(Path(self.saved_model_file))

    monkeypatch.setattr(ResumableTraining, "resume_checkpoint", spy)
    resumed = run("SASRec", "tiny", config_dict={**config, "checkpoint_dir": str(tmp_path / "fresh")})
    assert resumed.trained.trainer.start_epoch == KILLED_AFTER + 1
    assert restored[0].parent == tmp_path / "fresh" and restored[0].is_file()
    assert resumed.test == reference.test
    assert resumed.trained.best_valid == reference.trained.best_valid
    assert not state.exists(), "a finished fit removes its state"


class HalvingTrainer(Trainer):
    """Halves the learning rate every third epoch: a trainer with an LR scheduler."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=3, gamma=0.5)

    def _train_epoch(self, *args, **kwargs):
        loss = super()._train_epoch(*args, **kwargs)
        self.scheduler.step()
        return loss


class ScheduledSASRec(SASRec):
    trainer_class = HalvingTrainer


def test_a_trainers_lr_scheduler_resumes_too(tiny, monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})
    registry.register_model(ScheduledSASRec)
    config = {**tiny, **sasrec_config(), "stopping_step": 10}  # all epochs, across the halving
    reference = run("ScheduledSASRec", "tiny", config_dict=config)
    run_interrupted(monkeypatch, "ScheduledSASRec", config)
    resumed = run("ScheduledSASRec", "tiny", config_dict=config)
    assert resumed.trained.trainer.start_epoch == KILLED_AFTER + 1
    assert resumed.trained.trainer.scheduler.state_dict() == reference.trained.trainer.scheduler.state_dict()
    assert resumed.test == reference.test


def write_suite(folder, tiny) -> str:
    shared = {k: v for k, v in tiny.items() if k != "candidates_dir"}
    body = {
        "name": "resume-board",
        "dataset": "tiny",
        "config": {**shared, "checkpoint_dir": str(folder / "saved")},
        "protocols": [{"type": "full"}],
        "models": [{"model": "Pop"}, {"model": "SASRec", "config": sasrec_config()}],
        "output": "out",
    }
    folder.mkdir()
    (folder / "suite.yaml").write_text(yaml.safe_dump(body))
    return str(folder / "suite.yaml")


def test_killed_leaderboard_keeps_finished_records_and_resumes_the_killed_model(
    tiny, tmp_path, monkeypatch, capsys
):
    run_suite(write_suite(tmp_path / "uninterrupted", tiny))
    path = write_suite(tmp_path / "killed", tiny)
    run_killed(f"from recbole_llm.cli import main\nmain(['leaderboard', {path!r}])\n")
    out = tmp_path / "killed" / "out"
    assert sorted(p.name for p in out.glob("*.json")) == ["Pop__full.json"]
    pop_written = (out / "Pop__full.json").stat().st_mtime_ns
    (state,) = (tmp_path / "killed" / "saved" / "resume").glob("SASRec-*.pth")
    state_written = state.stat().st_mtime_ns

    # --table-only shows how far the killed run got, and trains nothing.
    capsys.readouterr()
    table = run_suite(path, table_only=True)
    line = next(line for line in table.splitlines() if line.startswith("**In progress**"))
    assert f"SASRec: {KILLED_AFTER + 1} epoch(s) trained, best validation NDCG@10 0." in line
    below = sasrec_config()["stopping_step"] + 1 - torch.load(state, weights_only=False)["cur_step"]
    left = sasrec_config()["epochs"] - KILLED_AFTER - 1
    assert f"left: at most {left} epoch(s), fewer once {below} more validation(s) in a row" in line
    assert "would run SASRec: no record SASRec__full.json" in capsys.readouterr().err
    assert state.stat().st_mtime_ns == state_written
    assert (out / "leaderboard.md").read_text() == table and "| Pop |" in table

    # --test-progress tests the best weights so far, as a run stopped after those epochs would.
    table = run_suite(path, test_progress=True)
    assert "testing SASRec as it stands (training in progress)" in capsys.readouterr().err
    assert state.stat().st_mtime_ns == state_written, "testing the progress trains nothing"
    interim = json.loads((out / "SASRec__full.json").read_text())
    assert interim["in_progress"] == {"epochs_trained": KILLED_AFTER + 1, "resume_state": state.name}
    shared = {k: v for k, v in tiny.items() if k != "candidates_dir"}
    stopped = {
        **shared,
        **sasrec_config(),
        "epochs": KILLED_AFTER + 1,
        "checkpoint_dir": str(tmp_path / "short"),
    }
    short = run("SASRec", "tiny", config_dict=stopped)
    assert interim["metrics"] == {k: float(v) for k, v in short.test["full"].items()}
    assert interim["best_valid"] == dict(short.trained.best_valid)
    assert interim["valid_curve"] == short.trained.trainer.valid_curve
    assert interim["epochs_run"] == KILLED_AFTER + 1
    sasrec_row = next(line for line in table.splitlines() if line.startswith("| SASRec |"))
    assert f"| {KILLED_AFTER + 1} † |" in sasrec_row and "† In progress" in table
    assert "**In progress**" in table, "the unfinished run is still listed with its schedule"
    (row,) = [r for r in expected_scores(load_suite(path))["rows"] if r["model"] == "SASRec"]
    assert "--test-progress" in row["command"] and not row["cheap"]

    resumed_at = []
    resume_checkpoint = ResumableTraining.resume_checkpoint

    def spy(self, resume_file):
        resume_checkpoint(self, resume_file)
        resumed_at.append((self.config["model"], self.start_epoch))

    monkeypatch.setattr(ResumableTraining, "resume_checkpoint", spy)
    assert "In progress" not in run_suite(path)
    assert resumed_at == [("SASRec", KILLED_AFTER + 1)]
    assert (out / "Pop__full.json").stat().st_mtime_ns == pop_written, "a finished record is not rerun"
    resumed = json.loads((out / "SASRec__full.json").read_text())
    reference = json.loads((tmp_path / "uninterrupted" / "out" / "SASRec__full.json").read_text())
    for key in ("metrics", "best_valid", "epochs_run"):
        assert resumed[key] == reference[key]
    assert "in_progress" not in resumed, "the finished run replaced its interim record"


def test_runs_started_in_the_same_second_keep_their_own_best_weights(tiny, monkeypatch):
    """RecBole names the best-model file by the second a trainer starts: two runs at once must not
    share it, or one tests the other's weights."""
    monkeypatch.setattr("recbole.trainer.trainer.get_local_time", lambda: "Dec-07-2026_20-10-06")
    config = {**tiny, **sasrec_config(), "epochs": 2}
    first = run("SASRec", "tiny", config_dict={**config, "seed": 1})
    second = run("SASRec", "tiny", config_dict={**config, "seed": 2})
    files = [r.trained.trainer.saved_model_file for r in (first, second)]
    assert files[0] != files[1]
    for result, path in zip((first, second), files):
        on_disk = torch.load(path, weights_only=False)["state_dict"]
        tested = result.trained.trainer.model.state_dict()
        assert all(torch.equal(on_disk[k], v) for k, v in tested.items())
