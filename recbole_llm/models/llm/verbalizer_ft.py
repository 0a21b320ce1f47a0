"""LLMVerbalizerRanker: LLMRanker's verbalizer with a LoRA adapter fine-tuned on the training split
(LlamaRec's verbalizer ranking head).

A row of RecBole's sequential train loader (the user's earlier items, `POS_ITEM_ID` next) becomes the
very prompt the verbalizer shows at test time, over the target and `train_num_negatives` items the row
never saw, drawn uniformly and shuffled with a generator seeded from `seed` (saved with resume states).
The loss is the cross-entropy of the target's label among the candidates' label logits at the answer
position, one forward per row. Training and scoring share one `LabelScorer` on the model's own copy of
the LLM, of which only the adapter is trained. Everything at evaluation (bootstrapping, position
probes, the response cache, keyed on the adapter's SHA-256) is LLMRanker's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from recbole.trainer import Trainer

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm.backend import Backend
from recbole_llm.llm.factory import cached
from recbole_llm.llm.lora import ADAPTER_CONFIG, LoRABackend
from recbole_llm.llm.prompts import candidate_labels
from recbole_llm.models.llm.modes import RankRequest
from recbole_llm.models.llm.ranker import LLMRanker

ADAPTER_KEY = "lora_"  # in the name of every adapter tensor, and of no base weight


def adapter_folder(checkpoint: str | Path, model: str) -> Path:
    """`<checkpoint_dir>/<model>-adapter-<time>` beside RecBole's `<checkpoint_dir>/<model>-<time>.pth`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem.replace(f"{model}-", f"{model}-adapter-", 1))


class AdapterTrainer(Trainer):
    """RecBole's trainer; every best-model checkpoint it writes gets the adapter beside it, in peft's
    format, so that `adapter_path` evaluates it later without RecBole's checkpoint or config."""

    def _valid_epoch(self, valid_data, show_progress=False):
        """Validation, whose LLM cost is logged here and kept out of the test's cost report."""
        result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.logger.info(f"validation cost: {self.model.evaluation_report()}")
        return result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return  # as RecBole: only the first process writes
        folder = adapter_folder(self.saved_model_file, self.config["model"])
        self.model.backend.save_adapter(folder)
        self.logger.info(f"Saving adapter: {folder}")


class LLMVerbalizerRanker(LLMRanker):
    trainer_class = AdapterTrainer

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # Registered, so that RecBole's optimiser, device moves and train/eval switches reach the LLM.
        self.scorer = self.backend.scorer
        self.negatives = int(config["train_num_negatives"])
        self.generator = torch.Generator().manual_seed(self.seed)
        labels = candidate_labels(self.negatives + 1, self.mode.label_style)
        self.label_ids = self.backend.label_token_ids(labels)

    def make_backend(self, config) -> Backend:
        """The model's own trainable copy of the LLM with its adapter, behind the response cache."""
        return cached(
            LoRABackend.from_config(
                config["llm_path"],
                config["llm_gguf_file"],
                dtype=config["llm_dtype"],
                batch_size=config["llm_batch_size"],
                lora={
                    "r": config["lora_r"],
                    "lora_alpha": config["lora_alpha"],
                    "lora_dropout": config["lora_dropout"],
                    "target_modules": list(config["lora_target_modules"]),
                },
                adapter_path=config["adapter_path"],
            ),
            config,
        )

    @classmethod
    def check_config(cls, config) -> None:
        """Settings that fine-tuning cannot work with, before the data and the LLM are loaded."""
        super().check_config(config)
        if importlib.util.find_spec("peft") is None:
            raise RecBoleLLMError("LLMVerbalizerRanker trains a LoRA adapter with peft: pip install peft.")
        if config["llm_backend"] != "hf":
            raise RecBoleLLMError(
                "LLMVerbalizerRanker fine-tunes local weights: set llm_backend: hf, "
                f"not {config['llm_backend']!r}."
            )
        if config["ranking_mode"] != "verbalizer":
            raise RecBoleLLMError(
                f"LLMVerbalizerRanker trains the verbalizer's label logits: set ranking_mode: verbalizer, "
                f"not {config['ranking_mode']!r} (LLMRanker serves the other modes)."
            )
        if config["user_profile"] or config["augment_items"]:
            raise RecBoleLLMError(
                "LLMVerbalizerRanker does not support user_profile or augment_items: the texts would be "
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
                "(<checkpoint_dir>/LLMVerbalizerRanker-adapter-<time>)."
            )
        if config["epochs"] > 0 and config["eval_step"] > 0 and config["valid_candidates"] is None:
            raise RecBoleLLMError(
                "LLMVerbalizerRanker ranks candidate lists only, so early stopping needs validation lists: "
                "set valid_candidates (e.g. {type: uniform, size: 20}), or eval_step: 0 to train without "
                "validation."
            )

    def calculate_loss(self, interaction) -> torch.Tensor:
        """Cross-entropy of each row's target label among its candidates' label logits."""
        sequences = interaction[self.ITEM_SEQ].cpu().numpy()
        lengths = interaction[self.ITEM_SEQ_LEN].cpu().numpy()
        targets = interaction[self.POS_ITEM_ID].cpu().numpy()
        lists = self.training_lists(sequences, lengths, targets)
        encoded = [
            self.backend.encode(self.mode.prompt(self.training_request(s, n, items)))
            for s, n, items in zip(sequences, lengths, lists)
        ]
        logits = self.scorer(encoded, self.label_ids)
        answers = torch.from_numpy((lists == targets[:, None]).argmax(1)).to(logits.device)
        return F.cross_entropy(logits, answers)

    def training_request(self, sequence: np.ndarray, length: int, items: np.ndarray) -> RankRequest:
        """The verbalizer's request for a training row, built as `predict_candidates` builds one."""
        texts = tuple(self.texts[i] for i in items)
        return RankRequest(self.history(sequence, length), texts, "", self.recently(sequence, length))

    def training_lists(self, sequences: np.ndarray, lengths: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Candidates [rows, 1 + train_num_negatives] per row: the target and negatives drawn uniformly
        from the items outside the row's history and target, in a random order."""
        lists = np.empty((len(targets), self.negatives + 1), dtype=np.int64)
        for row, (sequence, length, target) in enumerate(zip(sequences, lengths, targets)):
            allowed = torch.ones(self.n_items, dtype=torch.bool)
            allowed[0] = False  # padding
            allowed[torch.from_numpy(sequence[:length])] = False
            allowed[int(target)] = False
            pool = allowed.nonzero().squeeze(1)
            if len(pool) < self.negatives:
                raise RecBoleLLMError(
                    f"Cannot draw {self.negatives} negatives from the {len(pool)} items a training row has "
                    "not seen; lower train_num_negatives."
                )
            negatives = pool[torch.randperm(len(pool), generator=self.generator)[: self.negatives]]
            items = torch.cat([torch.tensor([int(target)]), negatives])
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
