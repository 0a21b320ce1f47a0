"""Popularity with exact counts.

RecBole 1.2.1's Pop miscounts in both of its settings: with sampled negatives (its default) the
negative rows are counted as interactions, and without them `item_cnt[item] = item_cnt[item] + 1`
adds one per *batch* for an item repeated within it, so popular items saturate and tie. This
version counts every training interaction once, and only positive rows when a label exists.
"""

import torch
from recbole.model.general_recommender.pop import Pop as RecBolePop


class Pop(RecBolePop):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]

    def calculate_loss(self, interaction):
        items = interaction[self.ITEM_ID]
        labelled = self.LABEL in interaction
        weight = (interaction[self.LABEL] > 0).long() if labelled else torch.ones_like(items)
        self.item_cnt.index_add_(0, items, weight.unsqueeze(1))
        self.max_cnt = self.item_cnt.max(dim=0)[0]
        return torch.nn.Parameter(torch.zeros(1)).to(self.device)
