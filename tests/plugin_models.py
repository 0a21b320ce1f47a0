"""Small models with known scores, used as references for the evaluation path."""

import torch
from recbole.model.abstract_recommender import GeneralRecommender, SequentialRecommender
from recbole.utils import InputType


class _NoTraining:
    """One unused parameter, so that RecBole's trainer has something to optimise."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def calculate_loss(self, interaction):
        return (self.unused**2).sum()


class _Fixed(_NoTraining, GeneralRecommender):
    """A general model whose score is `_score(items)`, the same for every user."""

    def predict(self, interaction):
        return self._score(interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        items = torch.arange(self.n_items).expand(len(interaction), -1)
        return self._score(items).reshape(-1)


class ItemIdScorer(_Fixed):
    """Scores an item by its internal id: the ranking is known without running a model."""

    def _score(self, items):
        return items.float()


class ConstantScorer(_Fixed):
    """Gives every item the same score: must never look better than random."""

    def _score(self, items):
        return torch.zeros_like(items, dtype=torch.float)


class SequenceOracle(_NoTraining, SequentialRecommender):
    """Knows the next item (RecBole puts it in the test interaction); ranks lists as a whole."""

    def full_sort_predict(self, interaction):
        return torch.nn.functional.one_hot(interaction[self.ITEM_ID], self.n_items).float()

    def predict_candidates(self, interaction, candidates):
        return (candidates == interaction[self.ITEM_ID].unsqueeze(1)).float()


class FirstSlotWins(_NoTraining, SequentialRecommender):
    """A maximally position-biased list ranker: the first candidate shown always wins."""

    ranks_candidate_lists_only = True

    def predict_candidates(self, interaction, candidates):
        return -torch.arange(candidates.shape[1], dtype=torch.float).expand(candidates.shape[0], -1)
