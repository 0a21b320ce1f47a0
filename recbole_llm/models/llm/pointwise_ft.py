"""LLMPointwiseRanker: LLMRanker's point-wise yes/no questions with a LoRA adapter fine-tuned on the
training split (TALLRec).

A training row asks the very question the `pointwise` mode asks at test time ("Will I like X?") about
items labelled yes or no: with `label_source: next_item`, the row's next item (yes) and
`train_num_negatives` items the row never saw (no), drawn uniformly with the model's seeded generator;
with `label_source: rating`, the next item only, yes iff its rating exceeds `rating_threshold`. The
loss is the cross-entropy over the two answer tokens' logits at the answer position (binary
cross-entropy on logit(yes) - logit(no)), one forward per question. A candidate's score is that
log-odds, as the zero-shot mode computes it; `evaluation_report` adds the users' mean AUC (TALLRec's
metric). The adapter, its training and checkpoints are FineTunedLLMRanker's (finetuned.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from recbole_llm.evaluation.auc import candidate_auc
from recbole_llm.models.llm.finetuned import FineTunedLLMRanker, check_choice, check_rating_loaded

LABEL_SOURCES = ("next_item", "rating")
YES, NO = 0, 1  # the answers' columns in the label logits


class LLMPointwiseRanker(FineTunedLLMRanker):
    trained_mode = "pointwise"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.label_source = config["label_source"]
        self.rating_threshold = float(config["rating_threshold"])
        self.RATING = config["RATING_FIELD"]
        template = self.mode.template
        self.label_ids = self.backend.label_token_ids([template.yes_word, template.no_word])
        self.auc_sum, self.auc_users = 0.0, 0

    @classmethod
    def check_config(cls, config) -> None:
        """Besides fine-tuning's settings, a known `label_source`; `rating` needs the rating loaded."""
        super().check_config(config)
        check_choice(config, "label_source", LABEL_SOURCES)
        if config["label_source"] == "rating":
            check_rating_loaded(config, "label_source: rating", "label_source: next_item")

    def calculate_loss(self, interaction) -> torch.Tensor:
        """Cross-entropy of each question's answer over the [yes, no] logits."""
        sequences = interaction[self.ITEM_SEQ].cpu().numpy()
        lengths = interaction[self.ITEM_SEQ_LEN].cpu().numpy()
        rows, items, answers = self.training_questions(interaction)
        encoded = [
            self.backend.encode(self.mode.prompt(self.training_request(sequences[r], lengths[r], [item])))
            for r, item in zip(rows, items)
        ]
        logits = self.scorer(encoded, self.label_ids)
        return F.cross_entropy(logits, torch.from_numpy(answers).to(logits.device))

    def training_questions(self, interaction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The questions of a batch: each one's row, the item it asks about, and its answer (YES, NO)."""
        sequences = interaction[self.ITEM_SEQ].cpu().numpy()
        lengths = interaction[self.ITEM_SEQ_LEN].cpu().numpy()
        targets = interaction[self.POS_ITEM_ID].cpu().numpy()
        if self.label_source == "rating":
            liked = interaction[self.RATING].cpu().numpy() > self.rating_threshold
            return np.arange(len(targets)), targets, np.where(liked, YES, NO)
        rows, items, answers = [], [], []
        for row, (sequence, length, target) in enumerate(zip(sequences, lengths, targets)):
            negatives = self.draw_negatives(sequence, length, target).numpy()
            rows += [row] * (1 + len(negatives))
            items += [int(target), *negatives]
            answers += [YES] + [NO] * len(negatives)
        return np.asarray(rows), np.asarray(items, dtype=np.int64), np.asarray(answers)

    def predict_candidates(self, interaction, candidates: torch.Tensor) -> torch.Tensor:
        """The zero-shot mode's scores (logit(yes) - logit(no)), each user's AUC counted for the report."""
        scores = super().predict_candidates(interaction, candidates)
        targets = interaction[self.POS_ITEM_ID].cpu().numpy()
        auc = candidate_auc(scores.cpu().numpy(), candidates.cpu().numpy(), targets)
        self.auc_sum += float(np.nansum(auc))
        self.auc_users += int((~np.isnan(auc)).sum())
        return scores

    def evaluation_report(self) -> dict:
        """LLMRanker's cost report and `auc`: the mean over users of their ground truth's AUC against
        their list's other items (None when no list held its ground truth)."""
        auc = self.auc_sum / self.auc_users if self.auc_users else None
        self.auc_sum, self.auc_users = 0.0, 0
        return {**super().evaluation_report(), "auc": auc}
