"""Fine-tuning EmbeddingRetriever's sentence-transformers encoder inside the RecBole trainer.

A row of RecBole's sequential train loader is one training interaction and the user's history before it
(`ITEM_SEQ`, `POS_ITEM_ID`), so validation and test items never reach a training pair. Each row becomes
a (query, positive) text pair, the query rendered exactly as `history_text` queries are at evaluation,
and sentence-transformers' own MultipleNegativesRankingLoss trains on a batch of pairs: each query's
softmax over cosine * 20 with every positive of the batch, the others serving as negatives.
"""

from __future__ import annotations

import torch

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.models.retrieval.queries import history_texts


def check_finetune_config(config) -> None:
    """Fine-tuning needs a trainable encoder and the query it trains (history text)."""
    k = config["finetune_max_his_len"]
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise RecBoleLLMError(f"finetune_max_his_len must be a positive integer or null, not {k!r}.")
    if not config["finetune"]:
        return
    if config["langchain_embeddings"] is not None:
        raise RecBoleLLMError(
            "finetune: True trains a sentence-transformers encoder; a LangChain Embeddings object cannot "
            "be trained: unset langchain_embeddings (encoder_path names the model) or set finetune: False."
        )
    if config["query_mode"] != "history_text":
        raise RecBoleLLMError(
            "finetune: True trains history text -> next item text, the query of query_mode: history_text; "
            f"set query_mode: history_text (not {config['query_mode']!r})."
        )


def _prompt(model, names: tuple[str, ...]) -> str | None:
    """The model's own prompt for a role, as `encode_query` / `encode_document` pick it."""
    return next((model.prompts[n] for n in names if n in model.prompts), None)


class EncoderTuning:
    """The loss of one training batch, computed through the (registered, trainable) `model`.

    `texts` are the items' texts (row 0: padding); a query holds the last `k` history items.
    """

    def __init__(self, model, texts: list[str], k: int):
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        self.model, self.texts, self.k = model, texts, k
        # Kept off the retriever's modules: the loss holds `model`, which would then be saved twice.
        self.loss_fn = MultipleNegativesRankingLoss(model)

    def pairs(
        self, sequences: torch.Tensor, lengths: torch.Tensor, positives: torch.Tensor
    ) -> tuple[list[str], list[str]]:
        """(query, positive) texts of a batch, one pair per distinct positive text: a repeated next
        item would otherwise be one of its own negatives (sentence-transformers' NO_DUPLICATES rule)."""
        queries = history_texts(sequences, lengths, self.k, self.texts)
        chosen: dict[str, str] = {}
        for query, item in zip(queries, positives.tolist()):
            chosen.setdefault(self.texts[item], query)
        return list(chosen.values()), list(chosen)

    def loss(self, sequences: torch.Tensor, lengths: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        queries, documents = self.pairs(sequences, lengths, positives)
        device = next(self.model.parameters()).device
        document_prompt = _prompt(self.model, ("document", "passage", "corpus"))
        features = [
            self._features(queries, _prompt(self.model, ("query",)), "query", device),
            self._features(documents, document_prompt, "document", device),
        ]
        return self.loss_fn(features, labels=None)

    def _features(self, texts: list[str], prompt: str | None, task: str, device) -> dict:
        features = self.model.preprocess(texts, prompt=prompt, task=task)
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
