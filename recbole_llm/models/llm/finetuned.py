"""FineTunedLLMRanker: what the LoRA-tuned LLM rankers (LLMVerbalizerRanker, LLMPointwiseRanker,
LLMListwiseRanker) share.

A subclass turns rows of RecBole's sequential train loader (the user's earlier items, `POS_ITEM_ID`
next) into the very prompts its mode (`trained_mode`) shows at test time and writes `calculate_loss`
over their label logits. This base gives it the model's own copy of the LLM with a peft adapter (only
the adapter is trained, through the backend's `LabelScorer`, so what is trained is what is evaluated),
negatives drawn with a generator seeded from `seed` (saved with resume states), adapter-only
checkpoints, a trainer that saves the adapter beside each of them, and the settings fine-tuning refuses.
Everything at evaluation (bootstrapping, position probes, the response cache, keyed on the adapter's
SHA-256) is LLMRanker's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from recbole.trainer import Trainer
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_llm.data.split import loaded_inter_columns
from recbole_llm.errors import RecBoleLLMError, did_you_mean
from recbole_llm.heap import release_free_heap
from recbole_llm.llm.backend import Backend
from recbole_llm.llm.factory import cached
from recbole_llm.llm.lora import ADAPTER_CONFIG, LoRABackend
from recbole_llm.models.llm.modes import RankRequest
from recbole_llm.models.llm.ranker import LLMRanker

ADAPTER_KEY = "lora_"  # in the name of every adapter tensor, and of no base weight


def adapter_folder(checkpoint: str | Path, model: str) -> Path:
    """`<checkpoint_dir>/<model>-adapter-<time>` beside RecBole's `<checkpoint_dir>/<model>-<time>.pth`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem.replace(f"{model}-", f"{model}-adapter-", 1))


def check_choice(config, key: str, choices: tuple[str, ...]) -> None:
    """`config[key]` is one of `choices`, or one line that lists them (and the nearest)."""
    value = config[key]
    if value not in choices:
        raise RecBoleLLMError(
            f"Unknown {key} {value!r}; choose from {', '.join(choices)}." + did_you_mean(str(value), choices)
        )


def check_rating_loaded(config, setting: str, instead: str) -> None:
    """The rating field that `setting` reads is loaded, or one line saying how to load it (or `instead`)."""
    rating = config["RATING_FIELD"]
    if not rating or rating not in loaded_inter_columns(config):
        raise RecBoleLLMError(
            f"{setting} reads the rating field {rating!r}, which {config['dataset']}.inter does not load: "
            f"add it to load_col (and the file), set RATING_FIELD, or use {instead}."
        )


class AdapterTrainer(Trainer):
    """RecBole's trainer with gradient accumulation (`gradient_accumulation_steps`: one optimiser step
    per that many batches of `train_batch_size` rows, so a CPU holds one small batch of long prompts
    at a time); every best-model checkpoint it writes gets the adapter beside it, in peft's format, so
    that `adapter_path` evaluates it later without RecBole's checkpoint or config."""

    def __init__(self, config, model):
        if not config["single_spec"]:
            raise RecBoleLLMError(
                f"{config['model']} trains in one process: run it without distributed training."
            )
        super().__init__(config, model)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        """RecBole's epoch loop (single process), stepping after every `gradient_accumulation_steps`
        batches and after the epoch's last; each batch's mean loss is divided by the size of its group,
        so a group of k batches of b rows steps as one batch of k * b rows would. Every
        `checkpoint_steps` optimiser steps it leaves a resume state, and a rerun continues after the
        batches that state had trained. Returns the sum of the batches' losses, as RecBole's loop does."""
        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        steps = int(self.config["gradient_accumulation_steps"])
        every = int(self.config["checkpoint_steps"] or 0) * steps  # batches between resume states
        partial = self.partial_epoch  # ResumableTraining's, which the registry adds to every trainer
        done, total = (partial["batches"], partial["loss"]) if partial else (0, 0.0)
        batches = len(train_data)
        iter_data = (
            tqdm(train_data, total=batches, ncols=100, desc=f"Train {epoch_idx:>5}")
            if show_progress
            else train_data
        )
        for index, interaction in enumerate(iter_data):
            if index < done:  # trained before the kill: replayed for the shuffle's sake only
                continue
            if index == done and partial:
                self.continue_partial_epoch()
            first = index - index % steps
            if index == first:
                self.optimizer.zero_grad()
            with torch.autocast(device_type=self.device.type, enabled=self.enable_amp):
                loss = loss_func(interaction.to(self.device))
            self._check_nan(loss)
            total += loss.item()
            (loss / min(steps, batches - first)).backward()
            if index + 1 == min(first + steps, batches):
                if self.clip_grad_norm:
                    clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
                self.optimizer.step()
                release_free_heap()  # bounds the process by its largest step (heap.py)
                if every and (index + 1) % every == 0 and index + 1 < batches:
                    self.save_partial_epoch(epoch_idx, index + 1, total)
        return total

    def _valid_epoch(self, valid_data, show_progress=False):
        """Validation, whose LLM cost is logged here and kept out of the test's cost report."""
        result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.logger.info(f"validation cost: {self.model.evaluation_report()}")
        release_free_heap()
        return result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        folder = adapter_folder(self.saved_model_file, self.config["model"])
        self.model.backend.save_adapter(folder)
        self.logger.info(f"Saving adapter: {folder}")


class FineTunedLLMRanker(LLMRanker):
    """Base of the fine-tuned rankers; a subclass names the mode it trains and writes `calculate_loss`."""

    trainer_class = AdapterTrainer
    trained_mode: ClassVar[str]

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # Registered, so that RecBole's optimiser, device moves and train/eval switches reach the LLM.
        self.scorer = self.backend.scorer
        self.negatives = int(config["train_num_negatives"])
        self.generator = torch.Generator().manual_seed(self.seed)

    def make_backend(self, config) -> Backend:
        """The model's own trainable copy of the LLM with its adapter, behind the response cache."""
        return cached(
            LoRABackend.from_config(
                config["llm_path"],
                config["llm_gguf_file"],
                dtype=config["llm_dtype"],
                autocast=config["llm_autocast"],
                batch_size=config["llm_batch_size"],
                lora={
                    "r": config["lora_r"],
                    "lora_alpha": config["lora_alpha"],
                    "lora_dropout": config["lora_dropout"],
                    "target_modules": list(config["lora_target_modules"]),
                },
                adapter_path=config["adapter_path"],
                gradient_checkpointing=bool(config["gradient_checkpointing"]),
            ),
            config,
        )

    @classmethod
    def check_config(cls, config) -> None:
        """Settings that fine-tuning cannot work with, before the data and the LLM are loaded."""
        super().check_config(config)
        name, mode = cls.__name__, cls.trained_mode
        if importlib.util.find_spec("peft") is None:
            raise RecBoleLLMError(f"{name} trains a LoRA adapter with peft: pip install peft.")
        if config["llm_backend"] != "hf":
            raise RecBoleLLMError(
                f"{name} fine-tunes local weights: set llm_backend: hf, not {config['llm_backend']!r}."
            )
        if config["ranking_mode"] != mode:
            raise RecBoleLLMError(
                f"{name} trains the {mode} mode's label logits: set ranking_mode: {mode}, "
                f"not {config['ranking_mode']!r} (LLMRanker serves the other modes)."
            )
        if config["user_profile"] or config["augment_items"]:
            raise RecBoleLLMError(
                f"{name} does not support user_profile or augment_items: the texts would be "
                "written by the model being trained. Set both to False."
            )
        targets = config["lora_target_modules"]
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise RecBoleLLMError(
                f"lora_target_modules must be a non-empty list of module names such as [q_proj, v_proj], "
                f"not {targets!r}."
            )
        path = config["adapter_path"]
        if path is not None and not (Path(path) / ADAPTER_CONFIG).is_file():
            raise RecBoleLLMError(
                f"adapter_path {path!r} holds no {ADAPTER_CONFIG}: point it at a folder a training run wrote "
                f"(<checkpoint_dir>/{name}-adapter-<time>)."
            )
        if config["epochs"] > 0 and config["eval_step"] > 0 and config["valid_candidates"] is None:
            raise RecBoleLLMError(
                f"{name} ranks candidate lists only, so early stopping needs validation lists: "
                "set valid_candidates (e.g. {type: uniform, size: 20}), or eval_step: 0 to train without "
                "validation."
            )

    def training_request(self, sequence: np.ndarray, length: int, items: Iterable[int]) -> RankRequest:
        """The request for a training row over `items`, built as `predict_candidates` builds one."""
        texts = tuple(self.texts[i] for i in items)
        return RankRequest(self.history(sequence, length), texts, "", self.recently(sequence, length))

    def draw_negatives(
        self, sequence: np.ndarray, length: int, target: int, count: int | None = None, also=()
    ) -> torch.Tensor:
        """`count` (`train_num_negatives`) items drawn uniformly from those outside the row's history,
        target and the items `also`."""
        count = self.negatives if count is None else count
        allowed = torch.ones(self.n_items, dtype=torch.bool)
        allowed[0] = False  # padding
        allowed[torch.from_numpy(sequence[:length])] = False
        allowed[int(target)] = False
        allowed[torch.as_tensor(np.asarray(also, dtype=np.int64))] = False
        pool = allowed.nonzero().squeeze(1)
        if len(pool) < count:
            raise RecBoleLLMError(
                f"Cannot draw {count} negatives from the {len(pool)} items a training row has "
                "not seen; lower train_num_negatives."
            )
        return pool[torch.randperm(len(pool), generator=self.generator)[:count]]

    def training_lists(self, sequences: np.ndarray, lengths: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Candidates [rows, 1 + train_num_negatives] per row: the target and its drawn negatives, in a
        random order."""
        lists = np.empty((len(targets), self.negatives + 1), dtype=np.int64)
        for row, (sequence, length, target) in enumerate(zip(sequences, lengths, targets)):
            items = torch.cat([torch.tensor([int(target)]), self.draw_negatives(sequence, length, target)])
            lists[row] = items[torch.randperm(len(items), generator=self.generator)].numpy()
        return lists

    def predict_candidates(self, interaction, candidates: torch.Tensor) -> torch.Tensor:
        """LLMRanker's scores, always in eval mode (no LoRA dropout), whatever mode the caller left."""
        training = self.training
        self.eval()
        try:
            return super().predict_candidates(interaction, candidates)
        finally:
            self.train(training)

    def state_dict(self, *args, **kwargs):
        """The adapter's weights only: the base LLM is the frozen model at `llm_path`, so checkpoints
        and resume states hold megabytes, not a copy of the LLM each."""
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if ADAPTER_KEY not in k]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Adapter weights from `state_dict` (see `state_dict`); strict about those only."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        lost = [k for k in result.missing_keys if ADAPTER_KEY in k]
        if strict and (lost or result.unexpected_keys):
            raise RecBoleLLMError(
                f"The checkpoint does not match this model's adapter (missing {lost[:3]}, unexpected "
                f"{result.unexpected_keys[:3]}): was it written with other lora_* settings?"
            )
        return result
