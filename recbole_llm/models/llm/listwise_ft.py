"""LLMListwiseRanker: LLMRanker's list-wise mode with a LoRA adapter fine-tuned on the training split
(ALRO, Chao et al. 2024, "Make Large Language Model a Better Ranker").

A training row becomes the very prompt the `listwise` mode shows at test time, over the target and
`train_num_negatives` items the row never saw (drawn and shuffled with the model's seeded generator),
and its target answer is the labels in the desired order, as the mode asks for them and parses them
(" C > A > B", then end-of-sequence): the candidates by decreasing gain, ties in their shown order (with
the `next_item` gains, the target first). The SFT loss is the token-level cross-entropy of that answer,
teacher-forced in one forward per row. `loss_type: alro` adds ALRO's soft lambda loss over the label
logits at the answer's label positions and its permutation-sensitive loss against the same row shown
in another seeded order (one more forward per row, skipped when `alro_beta` is 0); listwise_losses.py
has the formulas. Evaluation is
the zero-shot mode's: a generated answer, parsed. The adapter, its training and checkpoints are
FineTunedLLMRanker's (finetuned.py).

Two training targets: `next_item` (above: the target first, gains 1 and 0) and `graded` (ALRO's): the
row's list is its target and the user's next training items after it (`train_num_negatives + 1` in all,
training_windows.py), the answer ranks them by rating (gain: the rating); where the user's training
sequence ends sooner, uniform negatives among the items the user never rated fill the list, gain 0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm.listwise_losses import alro_loss, permutation_sensitive_loss, soft_lambda_loss
from recbole_llm.llm.prompts import candidate_labels
from recbole_llm.models.llm.finetuned import FineTunedLLMRanker, check_choice, check_rating_loaded
from recbole_llm.models.llm.training_windows import TrainingWindows

LOSS_TYPES = ("sft", "alro")
TRAIN_TARGETS = ("next_item", "graded")
SEPARATOR = " > "  # between the labels of an answer, as properties/prompts/listwise.yaml asks
# Labels whose first tokens stay distinct (the label logits need one token per candidate): A..Z, 1..9.
MAX_LABELS = {"letters": 26, "numbers": 9}


class LLMListwiseRanker(FineTunedLLMRanker):
    trained_mode = "listwise"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.loss_type = config["loss_type"]
        self.alpha, self.beta = float(config["alro_alpha"]), float(config["alro_beta"])
        self.gamma = float(config["alro_gamma"])
        self.USER_ID = config["USER_ID_FIELD"]
        graded = config["train_target"] == "graded"
        self.windows = TrainingWindows(dataset, config["RATING_FIELD"]) if graded else None
        self.labels = candidate_labels(self.negatives + 1, self.mode.label_style)
        self.label_ids = self.backend.label_token_ids(self.labels)
        tokenizer = self.backend.tokenizer

        def encode(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        # The label's token is " A" or, where the tokenizer has no such token, "A" after a space. The
        # first label follows the prompt directly: its token is the one the verbalizer and
        # `listwise_inference: first_label` read there.
        spaced = all(encode(" " + label)[0] == i for label, i in zip(self.labels, self.label_ids))
        self.label_tokens = [encode(" " + label) if spaced else encode(label) for label in self.labels]
        self.gaps = [[], encode(SEPARATOR[:-1] if spaced else SEPARATOR)]  # before the first, the others
        self.eos = tokenizer.eos_token_id

    @classmethod
    def check_config(cls, config) -> None:
        """Besides fine-tuning's settings, a known `loss_type`, non-negative ALRO weights and no more
        training candidates than labels with distinct first tokens."""
        super().check_config(config)
        check_choice(config, "loss_type", LOSS_TYPES)
        check_choice(config, "train_target", TRAIN_TARGETS)
        if config["train_target"] == "graded":
            check_rating_loaded(config, "train_target: graded", "train_target: next_item")
        for key in ("alro_alpha", "alro_beta"):
            if not isinstance(config[key], int | float) or config[key] < 0:
                raise RecBoleLLMError(f"{key} weighs a loss term: set a number >= 0, not {config[key]!r}.")
        if not isinstance(config["alro_gamma"], int | float) or config["alro_gamma"] <= 0:
            raise RecBoleLLMError(f"alro_gamma must be a number > 0, not {config['alro_gamma']!r}.")
        style, n = config["label_style"], int(config["train_num_negatives"]) + 1
        if n > MAX_LABELS.get(style, n):
            raise RecBoleLLMError(
                f"{n} training candidates need more than the {MAX_LABELS[style]} {style} labels that start "
                f"with distinct tokens: set train_num_negatives to at most {MAX_LABELS[style] - 1}."
            )

    def calculate_loss(self, interaction) -> torch.Tensor:
        """SFT loss of each row's ranked answer; with `loss_type: alro`, plus ALRO's two ranking losses."""
        sequences = interaction[self.ITEM_SEQ].cpu().numpy()
        lengths = interaction[self.ITEM_SEQ_LEN].cpu().numpy()
        targets = interaction[self.POS_ITEM_ID].cpu().numpy()
        if self.windows is None:
            lists = self.training_lists(sequences, lengths, targets)
            gains = (lists == targets[:, None]).astype(np.float32)
        else:
            lists, gains = self.graded_lists(
                interaction[self.USER_ID].cpu().numpy(), sequences, lengths, targets
            )
        ranked = np.take_along_axis(lists, np.argsort(-gains, axis=1, kind="stable"), 1)
        sft, label_logits = self.teacher_forced(sequences, lengths, lists, ranked)
        if self.loss_type == "sft":
            return sft
        zero = sft.new_zeros(())  # a term weighted 0 (an ablation) costs nothing, its forward included
        lambda_loss = (
            soft_lambda_loss(label_logits, torch.from_numpy(gains).to(label_logits), self.gamma)
            if self.alpha
            else zero
        )
        perm_loss = zero
        if self.beta:
            perm = torch.stack([torch.randperm(len(self.labels), generator=self.generator) for _ in lists])
            shown = np.take_along_axis(lists, perm.numpy(), 1)
            _, permuted_logits = self.teacher_forced(sequences, lengths, shown, ranked)
            perm_loss = permutation_sensitive_loss(
                label_logits, permuted_logits, perm.to(label_logits.device)
            )
        return alro_loss(sft, lambda_loss, perm_loss, self.alpha, self.beta)

    def graded_lists(
        self, users: np.ndarray, sequences: np.ndarray, lengths: np.ndarray, targets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`train_target: graded`: per row its window of the user's next rated training items, filled
        with negatives the user never rated (gain 0) if the sequence ends sooner, in a seeded random
        order; and each shown candidate's gain [rows, N], its rating."""
        n = self.negatives + 1
        lists, gains = np.empty((len(targets), n), dtype=np.int64), np.zeros((len(targets), n), np.float32)
        for row, (user, sequence, length, target) in enumerate(zip(users, sequences, lengths, targets)):
            items, ratings = self.windows.window(int(user), sequence[:length], int(target), n)
            fill = self.draw_negatives(
                sequence, length, target, n - len(items), self.windows.user_items(user)
            )
            order = torch.randperm(n, generator=self.generator).numpy()
            lists[row] = np.concatenate([items, fill.numpy()])[order]
            gains[row] = np.concatenate([ratings, np.zeros(len(fill), np.float32)])[order]
        return lists, gains

    def answer_tokens(self, slots: np.ndarray) -> tuple[list[int], list[int]]:
        """Token ids of the answer naming the candidates in `slots` (shown positions) in that order,
        e.g. " C > A > B" ("C > A > B" where labels have no leading-space tokens) and end-of-sequence,
        and the position in it of each label's token."""
        ids, positions = [], []
        for k, slot in enumerate(slots):
            ids += self.gaps[min(k, 1)]
            positions.append(len(ids))
            ids += self.label_tokens[slot]
        return ids + [self.eos], positions

    def teacher_forced(
        self, sequences: np.ndarray, lengths: np.ndarray, shown: np.ndarray, ranked: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For lists `shown` [rows, N] whose answers rank them as `ranked` (the same items per row): the
        SFT loss (cross-entropy over all answer tokens of the batch) and the label logits [rows, N, N]
        (answer position t, shown candidate i: the logit of i's label where the t-th label is written)."""
        prompts, answers, positions = [], [], []
        for s, n, items, order in zip(sequences, lengths, shown, ranked):
            prompts.append(self.backend.encode(self.mode.prompt(self.training_request(s, n, items))))
            slot = {int(item): k for k, item in enumerate(items)}
            ids, where = self.answer_tokens(np.array([slot[int(item)] for item in order]))
            answers.append(ids)
            positions.append(where)
        logits = self.scorer.teacher_forced(prompts, answers)
        device = logits[0].device
        sft = F.cross_entropy(torch.cat(logits), torch.tensor([i for a in answers for i in a], device=device))
        label_ids = torch.as_tensor(self.label_ids, device=device)
        label_logits = torch.stack([row[where][:, label_ids] for row, where in zip(logits, positions)])
        return sft, label_logits
