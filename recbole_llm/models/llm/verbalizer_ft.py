"""LLMVerbalizerRanker: LLMRanker's verbalizer with a LoRA adapter fine-tuned on the training split
(LlamaRec's verbalizer ranking head).

A training row becomes the very prompt the verbalizer shows at test time, over the target and
`train_num_negatives` items the row never saw, drawn uniformly and shuffled with the model's seeded
generator. The loss is the cross-entropy of the target's label among the candidates' label logits at
the answer position, one forward per row. The adapter, its training and checkpoints are
FineTunedLLMRanker's (finetuned.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recbole_llm.llm.prompts import candidate_labels
from recbole_llm.models.llm.finetuned import FineTunedLLMRanker


class LLMVerbalizerRanker(FineTunedLLMRanker):
    trained_mode = "verbalizer"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        labels = candidate_labels(self.negatives + 1, self.mode.label_style)
        self.label_ids = self.backend.label_token_ids(labels)

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
