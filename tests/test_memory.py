"""Memory (LLM-written profiles, the last few items) and item augmentation, with scripted backends: what
the prompts show, what is asked once and then read from the response cache, and what reaches the
retriever's encoder."""

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import pytest

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm.augment import augment_texts
from recbole_llm.llm.backend import Backend, Completion, LabelLogits
from recbole_llm.llm.cache import with_cache
from recbole_llm.llm.memory import ProfileWriter
from recbole_llm.llm.prompts import load_task_template
from recbole_llm.models.llm.modes import RankRequest, make_mode
from recbole_llm.quick_start import run, train

N = 6  # candidates per user
LABEL = f"uniform{N}-s2020"
QUOTED = re.compile(r'"([^"]*)"')


@dataclass
class Scripted(Backend):
    """Writes "About <the last quoted text of the prompt>." (a profile: the latest history item; a
    description: the item) and prefers the candidate shown first. Records every prompt."""

    kind = "scripted"
    model_id: str = "scripted"
    generated: list = field(default_factory=list)
    ranked: list = field(default_factory=list)

    def generate(self, prompts, max_new_tokens, on_result=None):
        self.generated += prompts
        return [Completion(f"About {QUOTED.findall(p.user)[-1]}.\n", 10, 4) for p in prompts]

    def label_logits(self, prompts, labels):
        self.ranked += prompts
        return [LabelLogits(tuple([5.0] + [0.0] * (len(labels) - 1)), 10) for _ in prompts]


def mode(name="listwise", strategy="sequential"):
    config = {"ranking_mode": name, "prompt_strategy": strategy, "prompt_template": {}, "domain": "movies"}
    config |= {"label_style": "letters", "max_new_tokens": 10, "quote_item_text": True}
    config |= {"pairwise_window": None, "listwise_inference": "generate"}
    return make_mode(Scripted(), config)


HISTORY, CANDIDATES = ("Heat (1995)", "Fargo (1996)"), ("Toy Story (1995)", "Up (2009)")
# The prompt of the code before memory existed, written out by hand.
LISTWISE_BEFORE = """I've interacted with the following movies in the past, in order (oldest first):
1. "Heat (1995)"
2. "Fargo (1996)"

Now there are 2 candidate movies that I could interact with next:
A. "Toy Story (1995)"
B. "Up (2009)"

Please rank these 2 movies by how likely I am to interact with each of them next, according to my history.
Answer with the labels of all 2 candidates only, most likely first, separated by " > ". \
Do not explain, and do not add movies that are not in the list."""
POINTWISE_ICL_BEFORE = (
    "If I've interacted with the following movies in the past, in order (oldest first):\n"
    '1. "Heat (1995)"\n'
    'then I would like "Fargo (1996)", so you should answer Yes for it. Now that I\'ve interacted with '
    '"Fargo (1996)", will I like "Up (2009)"? Answer Yes or No.'
)


def test_prompts_with_memory_off_are_those_of_before():
    listwise = mode().prompt(RankRequest(HISTORY, CANDIDATES))
    assert listwise.user == LISTWISE_BEFORE and listwise.answer_prefix == "Answer:"
    assert (
        listwise.system
        == "You are a recommender system. You rank candidate movies for a user from their history."
    )
    icl = mode("pointwise", "icl").prompt(RankRequest(HISTORY, CANDIDATES), ["Up (2009)"])
    assert icl.user == POINTWISE_ICL_BEFORE


def test_memory_on_adds_its_lines_after_the_history_or_before_an_icl_example():
    request = RankRequest(HISTORY, CANDIDATES, 'Likes "crime"\nthrillers', ("Fargo (1996)",))
    memory = 'A summary of my taste: "Likes \'crime\' thrillers"\nMost recently: "Fargo (1996)"\n'
    shown = mode().prompt(request).user
    assert shown == LISTWISE_BEFORE.replace('2. "Fargo (1996)"\n', '2. "Fargo (1996)"\n' + memory)
    icl = mode("pointwise", "icl").prompt(request, ["Up (2009)"]).user
    assert icl == memory + POINTWISE_ICL_BEFORE


def rank(tiny, backend, **config):
    settings = {
        **tiny,
        "candidates": {"type": "uniform", "size": N},
        "item_text": "{title}",
        "llm_backend": backend,
        "eval_users": None,
        "ranking_mode": "verbalizer",
        **config,
    }
    return run("LLMRanker", "tiny", config_dict=settings, saved=False)


def user_items(root, name="tiny") -> dict[str, list[str]]:
    """Each user's item titles in time order, read from the .inter file (the tiny set's titles)."""
    items: dict[str, list[str]] = {}
    for line in (root / name / f"{name}.inter").read_text().splitlines()[1:]:
        user, item, _ = line.split("\t")
        items.setdefault(user, []).append(f"Item number {item[1:]}")
    return items


def test_the_profile_is_written_once_per_user_shown_in_its_prompts_and_cached(tiny, tmp_path):
    settings = {"user_profile": True, "no_cache": False, "llm_cache_dir": str(tmp_path / "llm")}
    backend = Scripted()
    first = rank(tiny, backend, bootstrap=2, **settings)
    # Test histories end with each user's second-last item: one profile per user, seen in both orders.
    latest = {items[-2] for items in user_items(tmp_path / "data").values()}
    assert len(backend.generated) == 12 and len(backend.ranked) == 24
    assert all("Describe my taste" in p.user for p in backend.generated)
    shown = {re.search(r'A summary of my taste: "About (.*)\."\n', p.user)[1] for p in backend.ranked}
    assert shown == latest
    report = first.reports[LABEL]
    assert report["requests"] == 12 + 24 and report["output_tokens"] == 12 * 4
    again = Scripted()
    second = rank(tiny, again, bootstrap=2, **settings)
    assert again.generated == [] and again.ranked == [] and second.test == first.test


def test_short_term_items_show_the_last_k_history_items(tiny, tmp_path):
    backend = Scripted()
    rank(tiny, backend, short_term_items=2, no_cache=True)
    recent = {re.search(r"Most recently: (.*)\n", p.user)[1] for p in backend.ranked}
    expected = {f'"{items[-3]}", "{items[-2]}"' for items in user_items(tmp_path / "data").values()}
    assert recent == expected and backend.generated == []


def test_with_memory_off_the_ranker_writes_nothing_and_shows_no_memory(tiny):
    backend = Scripted()
    rank(tiny, backend, no_cache=True)
    assert backend.generated == [] and len(backend.ranked) == 12
    assert not any("summary of my taste" in p.user or "Most recently" in p.user for p in backend.ranked)


def test_profiles_are_keyed_on_the_history_and_the_template(tmp_path):
    backend = Scripted()
    cached = with_cache(backend, tmp_path)
    histories = [("Heat (1995)", "Fargo (1996)"), ("Up (2009)",), ("Heat (1995)", "Fargo (1996)")]
    answers = ProfileWriter(cached, "movies", batch_size=1)(histories)
    assert [a.text for a in answers] == ["About Fargo (1996).", "About Up (2009).", "About Fargo (1996)."]
    assert len(backend.generated) == 2  # the repeated history is asked once
    ProfileWriter(cached, "movies")(histories)
    assert len(backend.generated) == 2, "a rerun asks nothing"
    ProfileWriter(cached, "movies")([("Heat (1995)", "Alien (1979)")])
    assert len(backend.generated) == 3, "a changed history misses"
    template = load_task_template("profile", {"user": "Summarise my taste in {domain}:\n{history}"})
    ProfileWriter(cached, "movies", template=template)(histories[:1])
    assert backend.generated[-1].user == 'Summarise my taste in movies:\n1. "Heat (1995)"\n2. "Fargo (1996)"'
    assert len(backend.generated) == 4, "a changed template misses"


def test_augmentation_describes_only_thin_items_once_and_caches_them(tmp_path):
    backend = Scripted()
    cached = with_cache(backend, tmp_path)
    texts = ["", "Heat", "A long title of six words", "Up (2009)", "Heat"]
    augmented = augment_texts(texts, cached, "movies", min_words=3)
    assert augmented == [
        "",
        "Heat: About Heat.",
        texts[2],
        "Up (2009): About Up (2009).",
        "Heat: About Heat.",
    ]
    assert [p.user for p in backend.generated] == [
        f'Describe "{t}", one of our movies, in one line of at most 20 words: what it is and who would like '
        "it. Answer with the description only."
        for t in ("Heat", "Up (2009)")
    ]
    assert augment_texts(texts, cached, "movies", min_words=3) == augmented and len(backend.generated) == 2


class HashVectors:
    """A fake LangChain embedder: a fixed pseudo-random vector per text; records what it encodes."""

    model = "hash-vectors"

    def __init__(self):
        self.documents, self.queries = [], []

    @staticmethod
    def vector(text: str) -> list[float]:
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        return np.random.default_rng(seed).normal(size=16).tolist()

    def embed_documents(self, texts):
        self.documents += texts
        return [self.vector(t) for t in texts]

    def embed_query(self, text):
        self.queries.append(text)
        return self.vector(text)


def retriever(tiny, tmp_path, backend, **settings):
    config = {**tiny, "item_text": "{title}", "langchain_embeddings": HashVectors(), "llm_backend": backend}
    config |= {"llm_cache_dir": str(tmp_path / "llm"), "embedding_cache_dir": None}
    return train("EmbeddingRetriever", "tiny", config_dict={**config, **settings}, saved=False)


def test_augmentation_changes_the_retrievers_vectors_of_thin_items_only(tiny, tmp_path):
    item_file = tmp_path / "data" / "tiny" / "tiny.item"
    lines = item_file.read_text().splitlines()  # "Item number i": three words
    thin = {i for i in range(1, 41) if i % 3 == 0}
    lines[1:] = [f"i{i}\tItem number {i}" + ("" if i in thin else " of the rich kind") for i in range(1, 41)]
    item_file.write_text("\n".join(lines) + "\n")
    plain = retriever(tiny, tmp_path, Scripted()).model
    backend = Scripted()
    augmented = retriever(tiny, tmp_path, backend, augment_items=True, augment_min_words=4).model
    assert len(backend.generated) == len(thin)
    changed = (plain.item_vectors != augmented.item_vectors).any(dim=1).numpy()
    assert {t for t, c in zip(plain.texts, changed) if c} == {f"Item number {i}" for i in thin}
    described = dict(zip(plain.texts, augmented.texts))
    assert all(described[f"Item number {i}"] == f"Item number {i}: About Item number {i}." for i in thin)
    encoded = HashVectors()  # the vectors are those of the augmented texts
    expected = np.asarray(encoded.embed_documents(augmented.texts[1:]))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(augmented.item_vectors[1:].numpy(), expected, atol=1e-6)
    again = Scripted()
    retriever(tiny, tmp_path, again, augment_items=True, augment_min_words=4)
    assert again.generated == []


def test_profile_queries_encode_the_profile_the_ranker_showed(tiny, tmp_path):
    backend = Scripted()
    rank(tiny, backend, user_profile=True, no_cache=False, llm_cache_dir=str(tmp_path / "llm"))
    again = Scripted()
    trained = retriever(tiny, tmp_path, again, query_mode="profile")
    interaction = next(iter(trained.split.test))[0]  # every test user (the batch holds all 12)
    scores = trained.model.full_sort_predict(interaction).numpy()
    latest = {f"About {items[-2]}." for items in user_items(tmp_path / "data").values()}
    queried = trained.model.encoder.embeddings.queries
    assert sorted(queried) == sorted(latest)  # each distinct profile encoded once
    assert again.generated == [], "the ranker's cached profiles are the retriever's"
    sequences, lengths = interaction["item_id_list"].numpy(), interaction["item_length"].numpy()
    titles = trained.model.texts
    queries = np.asarray(
        [HashVectors.vector(f"About {titles[s[n - 1]]}.") for s, n in zip(sequences, lengths)]
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    np.testing.assert_allclose(scores, queries @ trained.model.item_vectors.numpy().T, atol=1e-5)


def test_bad_memory_settings_fail_in_one_line(tiny):
    with pytest.raises(RecBoleLLMError, match="short_term_items must be a positive integer or null"):
        rank(tiny, Scripted(), short_term_items=0)
    with pytest.raises(RecBoleLLMError, match="augment_min_words must be a positive integer"):
        rank(tiny, Scripted(), augment_items=True, augment_min_words=0)
