"""Training that survives a kill: a resume state after every finished epoch, and resuming from it.

A rerun of the same command (same model class, same effective config) finds the state its killed
predecessor left under `resume_dir` (default `<checkpoint_dir>/resume/`) and continues with the next
epoch, ending exactly as an uninterrupted run would: the state holds the model, the optimizer, any LR
scheduler, the early-stopping counters, the loss and time history, every random generator training
draws from, and the best epoch's weights so far, so that a state carried to a fresh checkout (a later
session, another machine) resumes without the checkpoint directory it was written beside.
A finished fit deletes its state, so the next identical command starts fresh, as RecBole does.
A trainer whose epochs take long (a fine-tuned LLM) also saves a state within an epoch
(`save_partial_epoch`, after an optimiser step): it holds the random states of the epoch's start, so
the rerun replays the same shuffle, skips the batches already trained and continues from there.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from recbole.utils import set_color

from recbole_llm.atomic import partial_path
from recbole_llm.benchmark.records import fingerprint
from recbole_llm.errors import RecBoleLLMError

# Settings that never change what is trained: where output goes, what is shown, how keys are checked.
OUTPUT_ONLY = frozenset(
    {
        "resume",
        "resume_dir",
        "checkpoint_steps",
        "gradient_checkpointing",  # the same gradients, recomputed: switch it on to resume short of memory
        "strict",
        "checkpoint_dir",
        "candidates_dir",
        "show_progress",
        "state",
        "log_wandb",
        "wandb_project",
        "loss_decimal_place",
        "metric_decimal_place",
        "save_dataset",
        "dataset_save_path",
        "save_dataloaders",
        "dataloaders_save_path",
    }
)

# What RecBole's fit carries from epoch to epoch but its checkpoints leave out.
_PROGRESS = ("best_valid_result", "train_loss_dict", "epoch_seconds", "valid_curve", "saved_model_file")


def resume_path(config, model_class: type) -> Path:
    """The resume state of a run: the same for the same command, whatever its output settings."""
    settings = {k: v for k, v in config.final_config_dict.items() if k not in OUTPUT_ONLY}
    key = fingerprint({"class": f"{model_class.__module__}.{model_class.__qualname__}", "config": settings})
    folder = Path(config["resume_dir"] or Path(config["checkpoint_dir"]) / "resume")
    return folder / f"{config['model']}-{key}.pth"


def progress(path: Path, metric: str) -> str:
    """How far the killed run whose resume state is `path` got: epochs, a started one, the best score."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    extra = state.get("resume") or {}
    done = f"{state['epoch'] + 1} epoch(s) trained"
    partial = extra.get("partial_epoch")
    if partial:
        done += f" and {partial['batches']} batch(es) of the next"
    curve = extra.get("progress", {}).get("valid_curve") or []
    if curve:
        epochs, best = max(curve, key=lambda point: point[1])
        done += f", best validation {metric} {best:.4f} (after epoch {epochs:g})"
    config = state["config"]
    below = config["stopping_step"] + 1 - state["cur_step"]  # RecBole stops after stopping_step + 1
    return (
        f"{done}; left: at most {config['epochs'] - state['epoch'] - 1} epoch(s), fewer once {below} more "
        "validation(s) in a row score below the best"
    )


def atomic_save(obj, path: Path) -> None:
    """`torch.save` through a temporary file, so that a kill mid-write leaves the previous file whole."""
    partial = partial_path(path)
    torch.save(obj, partial, pickle_protocol=4)
    os.replace(partial, path)


def _generators(model: torch.nn.Module, train_data) -> dict[str, torch.Generator]:
    """Training's own generators: the model's (e.g. the negative sampler's) and the loader's shuffle."""
    found = {
        f"model.{name}.{attr}": value
        for name, module in model.named_modules()
        for attr, value in vars(module).items()
        if isinstance(value, torch.Generator)
    }
    found.update(
        {f"train_data.{a}": v for a, v in vars(train_data).items() if isinstance(v, torch.Generator)}
    )
    return found


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    """Python's, NumPy's and torch's global random states, and those of `generators`."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


def _schedulers(trainer) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
    return {k: v for k, v in vars(trainer).items() if isinstance(v, torch.optim.lr_scheduler.LRScheduler)}


class ResumableTraining:
    """Mixin for a RecBole `Trainer`: `fit` resumes an unfinished run of the same command.

    The state after epoch k is written when epoch k+1 begins, once validation and early stopping of
    epoch k are done, and the random states are restored at that same point. `saved=False` writes
    nothing; `resume: False` starts fresh (and overwrites the old state).
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.resume_file = resume_path(config, type(model))
        # RecBole names the best-model file <model>-<local time>.pth: runs started in the same second
        # in one checkpoint_dir (two at once) would share it and test each other's weights.
        stem, ext = os.path.splitext(self.saved_model_file)
        run_key = self.resume_file.stem.removeprefix(f"{config['model']}-")
        self.saved_model_file = f"{stem}-{run_key[:8]}{ext}"
        self.seconds_before_resume = 0.0  # fit time the resumed state had already spent
        self._keep_state = False
        self._first_epoch = 0
        self._fit_start = 0.0
        self._pending_rng = None
        self._epoch_rng: dict | None = None  # random states at the current epoch's start
        self._epoch_generators: dict[str, torch.Generator] = {}
        self._epoch_start = 0.0
        self._carried_seconds = 0.0  # what a killed run had spent on the current epoch
        # Within-epoch progress read from a resume state: batches trained, their loss, the random
        # states and training seconds at that point; consumed by the epoch that continues it.
        self.partial_epoch: dict | None = None
        self._best: dict | None = None  # the best-model file's weights, read once per file written

    def fit(
        self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None
    ):
        if saved and self.config["resume"] is not False and self.resume_file.is_file():
            self.resume_checkpoint(self.resume_file)
            within = f", after {self.partial_epoch['batches']} of its batches" if self.partial_epoch else ""
            self.logger.info(
                f"resuming {self.config['model']} from epoch {self.start_epoch}{within} ({self.resume_file})"
            )
        self._keep_state, self._first_epoch = saved, self.start_epoch
        self._fit_start = time.perf_counter()
        result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        if saved:
            self.resume_file.unlink(missing_ok=True)  # finished: only a killed run leaves its state
        return result

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        generators = _generators(self.model, train_data)
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng, generators)
            self._pending_rng = None
        elif self._keep_state and epoch_idx > self._first_epoch:
            self._save_resume_state(epoch_idx - 1, generators)
        self._epoch_rng, self._epoch_generators = rng_state(generators), generators
        self._epoch_start = time.perf_counter()
        self._carried_seconds = self.partial_epoch["seconds"] if self.partial_epoch else 0.0
        result = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
        if getattr(self, "epoch_seconds", None):
            self.epoch_seconds[-1] += self._carried_seconds  # the killed run's share of this epoch
        return result

    def save_partial_epoch(self, epoch_idx: int, batches: int, loss: float) -> None:
        """A resume state within epoch `epoch_idx`, after `batches` batches whose losses sum to `loss`
        and whose gradients have been applied (call it right after an optimiser step)."""
        if not self._keep_state:
            return
        self._save_resume_state(
            epoch_idx - 1,
            self._epoch_generators,
            rng=self._epoch_rng,
            partial={
                "batches": batches,
                "loss": loss,
                "rng": rng_state(self._epoch_generators),
                "seconds": self._carried_seconds + time.perf_counter() - self._epoch_start,
            },
        )

    def continue_partial_epoch(self) -> None:
        """At the first batch not yet trained: the random states the killed run had there."""
        set_rng_state(self.partial_epoch["rng"], self._epoch_generators)
        self.partial_epoch = None

    def _save_resume_state(
        self,
        epoch: int,
        generators: dict[str, torch.Generator],
        rng: dict | None = None,
        partial: dict | None = None,
    ) -> None:
        state = {  # RecBole's checkpoint, which its resume_checkpoint reads ...
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "resume": {  # ... and what it leaves out
                "progress": {name: getattr(self, name) for name in _PROGRESS if hasattr(self, name)},
                "schedulers": {name: s.state_dict() for name, s in _schedulers(self).items()},
                "rng": rng or rng_state(generators),
                "fit_seconds": self.seconds_before_resume + time.perf_counter() - self._fit_start,
                "partial_epoch": partial,
                "best_checkpoint": self._best_checkpoint(),
            },
        }
        self.resume_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(state, self.resume_file)

    def resume_checkpoint(self, resume_file):
        """RecBole's resume, plus the progress, schedulers and random states of a resume state."""
        super().resume_checkpoint(resume_file)
        state = torch.load(resume_file, map_location="cpu", weights_only=False)
        extra = state.get("resume")
        if extra is None:  # a plain RecBole checkpoint
            return
        for name, value in extra["progress"].items():
            setattr(self, name, value)
        for name, scheduler in _schedulers(self).items():
            scheduler.load_state_dict(extra["schedulers"][name])
        self._pending_rng = extra["rng"]
        self.seconds_before_resume = extra["fit_seconds"]
        self.partial_epoch = extra.get("partial_epoch")
        best = extra.get("best_checkpoint")
        if best is not None and not os.path.isfile(self.saved_model_file):  # moved without its checkpoints
            self._write_best(best, latest=state)
        self._best = best

    def load_progress(self) -> tuple[dict | None, int]:
        """Take over the best weights so far and the history of the unfinished run whose resume state
        this trainer finds, to test them while it is still training (reads the state, writes nothing).
        Returns the best validation result and the number of epochs trained."""
        if not self.resume_file.is_file():
            raise RecBoleLLMError(
                f"No resume state {self.resume_file}: this run has no training in progress."
            )
        state = torch.load(self.resume_file, map_location="cpu", weights_only=False)
        extra = state.get("resume") or {}
        best = extra.get("best_checkpoint")
        if best is None:
            raise RecBoleLLMError(
                f"{self.resume_file} holds no validated weights yet: let the run train at least one epoch."
            )
        for name, value in extra["progress"].items():
            setattr(self, name, value)
        self.seconds_before_resume = extra["fit_seconds"]
        self.model.load_state_dict(best["state_dict"])
        self.model.load_other_parameter(best["other_parameter"])
        return getattr(self, "best_valid_result", None), state["epoch"] + 1

    def _best_checkpoint(self) -> dict | None:
        """The weights of RecBole's best-model file as it stands (testing needs no optimizer state)."""
        path = getattr(self, "saved_model_file", None)
        if self._best is None and path and os.path.isfile(path):
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            self._best = {k: checkpoint[k] for k in ("epoch", "state_dict", "other_parameter")}
        return self._best

    def _write_best(self, best: dict, latest: dict) -> None:
        """The best-model file again, in this run's checkpoint_dir, written the trainer's own way (a
        fine-tuned ranker's adapter folder with it); then back to the `latest` weights to train on."""
        self.saved_model_file = os.path.join(
            self.config["checkpoint_dir"], os.path.basename(self.saved_model_file)
        )
        self.model.load_state_dict(best["state_dict"])
        self.model.load_other_parameter(best["other_parameter"])
        self._save_checkpoint(best["epoch"], verbose=False)
        self.model.load_state_dict(latest["state_dict"])
        self.model.load_other_parameter(latest["other_parameter"])

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's best-model file, written atomically: a resumed run may still need the old one."""
        target = kwargs.pop("saved_model_file", self.saved_model_file)
        partial = f"{target}.tmp"
        super()._save_checkpoint(epoch, verbose=False, saved_model_file=partial, **kwargs)
        if os.path.exists(partial):  # RecBole writes nothing on distributed ranks other than 0
            os.replace(partial, target)
            self._best = None  # a new best: the next resume state reads it
            if verbose:
                self.logger.info(set_color("Saving current", "blue") + f": {target}")
