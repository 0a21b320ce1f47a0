"""EmbeddingRetriever with `finetune: True`: the in-batch loss against a hand computation, a learnable toy
where fine-tuning beats zero-shot, training pairs from the training split only, fresh item vectors after
training, resuming a killed fit, and the settings it refuses. The encoder is a tiny random BERT written
to tmp_path (no download)."""

import sqlite3

import numpy as np
import pytest
import torch

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.evaluation.resume import ResumableTraining
from recbole_llm.models.retrieval.embedding_cache import FILENAME
from recbole_llm.models.retrieval.finetune import EncoderTuning
from recbole_llm.models.retrieval.retriever import EmbeddingRetriever
from recbole_llm.quick_start import run, train

pytest.importorskip("sentence_transformers")
pytest.importorskip("faiss")

N_ITEMS, N_USERS, PER_USER = 40, 60, 10
TITLES = [f"w{k}" for k in range(N_ITEMS)]


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory) -> str:
    """A sentence-transformers model (2-layer BERT, hidden 32, no dropout, a word-level vocabulary of the
    titles, mean pooling), randomly initialised and saved to a local folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("encoder")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ";", *TITLES]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(root / "bert")
    torch.manual_seed(0)
    bert = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(bert).save_pretrained(root / "bert")
    transformer = Transformer(str(root / "bert"), max_seq_length=32)
    pooling = Pooling(transformer.get_embedding_dimension(), "mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(root / "st"))
    return str(root / "st")


def write_chains(root) -> None:
    """Items on one hidden cycle (a random order of their ids); each user walks PER_USER steps of it from a
    random start. Titles name an item, not its place on the cycle: zero-shot, a random encoder cannot tell
    the next item, while the training pairs show every step of the cycle many times."""
    rng = np.random.default_rng(0)
    cycle = rng.permutation(N_ITEMS)
    folder = root / "chains"
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(N_USERS):
        start = rng.integers(N_ITEMS)
        walk = [cycle[(start + s) % N_ITEMS] for s in range(PER_USER)]
        lines += [f"u{u}\ti{k}\t{t}" for t, k in enumerate(walk, start=1)]
    (folder / "chains.inter").write_text("\n".join(lines) + "\n")
    titles = ["item_id:token\ttitle:token_seq"] + [f"i{k}\t{TITLES[k]}" for k in range(N_ITEMS)]
    (folder / "chains.item").write_text("\n".join(titles) + "\n")


@pytest.fixture
def chains(tiny, tmp_path, encoder_path):
    write_chains(tmp_path / "data")
    return {
        **tiny,
        "item_text": "{title}",
        "encoder_path": encoder_path,
        "embedding_cache_dir": str(tmp_path / "embeddings"),
        "query_mode": "history_text",
        "max_his_len": 2,
        "finetune": True,
        "learning_rate": 0.01,
        "train_batch_size": 32,
        "epochs": 3,
        "eval_step": 1,
        "stopping_step": 2,
        "valid_metric": "NDCG@10",
    }


def history_text(sequence, length, k, title) -> str:
    return "; ".join(title[i] for i in sequence[:length][::-1][:k])


def test_the_loss_is_softmax_cross_entropy_over_scaled_cosines_of_the_batch(chains):
    trained = train("EmbeddingRetriever", "chains", config_dict={**chains, "epochs": 0}, saved=False)
    model = trained.model
    interaction = next(iter(trained.split.train))
    sequences, lengths = interaction[model.ITEM_SEQ].numpy(), interaction[model.ITEM_SEQ_LEN].numpy()
    positives = interaction[model.POS_ITEM_ID].numpy()
    first = {}  # a repeated next item keeps its first row
    for row, item in enumerate(positives):
        first.setdefault(item, row)
    assert len(first) < len(positives), "the batch should repeat a next item"
    rows = list(first.values())
    encoder = model.sentence_model
    queries = encoder.encode([history_text(sequences[r], lengths[r], 2, model.texts) for r in rows])
    documents = encoder.encode([model.texts[positives[r]] for r in rows])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    documents /= np.linalg.norm(documents, axis=1, keepdims=True)
    logits = 20 * queries @ documents.T  # cosine * scale
    expected = np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits))
    loss = model.calculate_loss(interaction)
    assert loss.requires_grad
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-4)


def held_out(split) -> set:
    """(user, item) pairs of the validation and test interactions."""
    return {(u, i) for users, items in (split.valid_pairs, split.test_pairs) for u, i in zip(users, items)}


def test_fine_tuning_beats_zero_shot_on_training_pairs_only_with_fresh_vectors(chains, tmp_path, monkeypatch):
    zero_shot = train("EmbeddingRetriever", "chains", config_dict={**chains, "finetune": False}, saved=False)
    zero_valid = zero_shot.trainer.evaluate(zero_shot.split.valid, load_best_model=False)
    cache = sqlite3.connect(tmp_path / "embeddings" / FILENAME)
    cached_rows = cache.execute("SELECT COUNT(*) FROM vectors").fetchone()

    batches = []  # (users, positives, pairs) of every training step
    loss = EncoderTuning.loss

    def recording_loss(self, sequences, lengths, positives):
        batches.append((positives.tolist(), self.pairs(sequences, lengths, positives)))
        return loss(self, sequences, lengths, positives)

    calculate = EmbeddingRetriever.calculate_loss

    def recording_calculate(self, interaction):
        users.append(interaction[self.USER_ID].tolist())
        return calculate(self, interaction)

    users = []
    monkeypatch.setattr(EncoderTuning, "loss", recording_loss)
    monkeypatch.setattr(EmbeddingRetriever, "calculate_loss", recording_calculate)
    tuned = run("EmbeddingRetriever", "chains", config_dict=chains)

    assert tuned.trained.best_valid["ndcg@10"] > zero_valid["ndcg@10"] + 0.2
    assert tuned.test["full"]["ndcg@10"] > 0.5

    # Every training pair: the history and next item of a training interaction, never a held-out one.
    item_of = {title: i for i, title in enumerate(tuned.trained.model.texts) if i}
    forbidden = held_out(tuned.trained.split)
    n_pairs = 0
    for batch_users, (positives, (queries, documents)) in zip(users, batches, strict=True):
        user_of = {}
        for user, item in zip(batch_users, positives):
            user_of.setdefault(item, user)  # the row whose pair was kept
        for query, document in zip(queries, documents, strict=True):
            user = user_of[item_of[document]]
            assert all((user, item_of[t]) not in forbidden for t in [document, *query.split("; ")])
            n_pairs += 1
    assert len(batches) == tuned.trained.epochs_run * len(tuned.trained.split.train) and n_pairs > 0
    # Not vacuous: other users' training pairs do hold items that are someone's held-out ones.
    assert {item_of[d] for _, (_, documents) in batches for d in documents} & {i for _, i in forbidden}

    # The vectors scored are the best weights' own, and no tuned vector entered the disk cache.
    model = tuned.trained.model
    fresh = model.sentence_model.encode_document(model.texts[1:])
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    np.testing.assert_allclose(model.item_vectors[1:].numpy(), fresh, atol=1e-5)
    assert not np.allclose(model.item_vectors.numpy(), zero_shot.model.item_vectors.numpy(), atol=1e-2)
    assert cache.execute("SELECT COUNT(*) FROM vectors").fetchone() == cached_rows


class Interrupted(BaseException):
    pass


def test_a_killed_fine_tuning_resumes_and_ends_as_if_uninterrupted(chains, tmp_path, monkeypatch):
    reference = run("EmbeddingRetriever", "chains", config_dict=chains)
    assert any(k.startswith("sentence_model.") for k in reference.trained.model.state_dict())
    save = ResumableTraining._save_resume_state

    def save_then_stop(self, epoch, generators):
        save(self, epoch, generators)
        raise Interrupted

    with monkeypatch.context() as patched:
        patched.setattr(ResumableTraining, "_save_resume_state", save_then_stop)
        with pytest.raises(Interrupted):
            run("EmbeddingRetriever", "chains", config_dict=chains)
    resumed = run("EmbeddingRetriever", "chains", config_dict=chains)
    assert resumed.trained.trainer.start_epoch == 1
    assert resumed.trained.trainer.train_loss_dict == reference.trained.trainer.train_loss_dict
    assert resumed.test == reference.test


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"langchain_embeddings": "math:pi", "encoder_path": None}, "LangChain Embeddings object cannot"),
        ({"query_mode": "recent_mean"}, "set query_mode: history_text"),
        ({"finetune": "yes"}, "finetune='yes' should be of type bool"),
        ({"finetune_max_his_len": 0}, "finetune_max_his_len"),
    ],
)
def test_what_fine_tuning_cannot_use_fails_before_any_data_is_loaded(chains, monkeypatch, settings, message):
    monkeypatch.setattr("recbole_llm.quick_start.load_split", lambda config: pytest.fail("data loaded"))
    with pytest.raises(RecBoleLLMError, match=message):
        train("EmbeddingRetriever", "chains", config_dict={**chains, **settings}, saved=False)


def test_a_zero_shot_retriever_refuses_to_train(chains):
    trained = train("EmbeddingRetriever", "chains", config_dict={**chains, "finetune": False}, saved=False)
    with pytest.raises(RecBoleLLMError, match="set finetune: True"):
        trained.model.calculate_loss(next(iter(trained.split.train)))
