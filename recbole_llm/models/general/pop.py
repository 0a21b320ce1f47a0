"""Popularity with exact counts, computed once from the training data: nothing to train.

RecBole 1.2.1's Pop miscounts in both of its settings: with sampled negatives (its default) the
negative rows are counted as interactions, and without them `item_cnt[item] = item_cnt[item] + 1`
adds one per *batch* for an item repeated within it, so popular items saturate and tie. This
version counts every training interaction once, and only positive rows when a label exists. As the
counts are final at construction, the trainer skips fitting and validation (which, on a large
dataset, cost far more than the counting).
"""

import torch
from recbole.model.general_recommender.pop import Pop as RecBolePop


class Pop(RecBolePop):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.fake_loss.requires_grad_(False)  # no trainable parameter: fitting is skipped
        inter = dataset.inter_feat
        items = inter[self.ITEM_ID].to(self.device)
        label = config["LABEL_FIELD"]
        weight = (inter[label] > 0).long() if label in inter else torch.ones_like(items)
        self.item_cnt.index_add_(0, items, weight.to(self.device).unsqueeze(1))
        self.max_cnt = self.item_cnt.max(dim=0)[0]

    def calculate_loss(self, interaction):
        """The counts are final at construction; a trainer that calls this has nothing to learn."""
        return self.fake_loss.sum()
