"""How any model scores a batch of users: over candidate lists, or over all items."""

from __future__ import annotations

import torch


def score_candidates(
    model, interaction, candidates: torch.Tensor, item_features, max_rows: int
) -> torch.Tensor:
    """Scores (users x N) of each user's candidate items.

    A model that ranks whole lists (an LLM ranker) implements `predict_candidates`; any other model
    is asked through RecBole's `predict` on (user, candidate) rows, `max_rows` at a time.
    """
    if hasattr(model, "predict_candidates"):
        return model.predict_candidates(interaction, candidates)
    n_users, n = candidates.shape
    rows = interaction.repeat_interleave(n)
    rows.update(item_features[candidates.reshape(-1)])
    scores = [model.predict(rows[i : i + max_rows]) for i in range(0, n_users * n, max_rows)]
    return torch.cat(scores).view(n_users, n)


def score_all_items(model, interaction, n_items: int, item_features, max_rows: int) -> torch.Tensor:
    """Scores (users x items) of every item, through `full_sort_predict` when the model has it."""
    try:
        scores = model.full_sort_predict(interaction)
    except NotImplementedError:
        everything = torch.arange(n_items)
        candidates = everything.expand(len(interaction), n_items)
        return score_candidates(model, interaction, candidates, item_features, max_rows)
    return scores.view(-1, n_items)


@torch.no_grad()
def score_loader(
    model, loader, max_rows: int, top_k: int | None = None, exclude=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(users, scores over all items) for every row of a full-sort evaluation loader.

    With `top_k`, a model that has an index (`retrieve`) scores only each user's top-k items outside
    `exclude` (a user x item matrix), the rest -inf: the cost of a real retrieval stage.
    """
    model.eval()
    dataset = loader._dataset
    item_features = dataset.get_item_feature()
    users, scores = [], []
    for interaction, *_ in loader:
        users.append(interaction[dataset.uid_field])
        if top_k is not None and hasattr(model, "retrieve"):
            items, top = model.retrieve(interaction, top_k, exclude)
            batch = torch.full((len(items), dataset.item_num), -torch.inf).scatter_(1, items.cpu(), top.cpu())
        else:
            batch = score_all_items(model, interaction, dataset.item_num, item_features, max_rows).cpu()
        scores.append(batch)
    return torch.cat(users), torch.cat(scores)
