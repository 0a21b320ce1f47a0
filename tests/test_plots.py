import math
import sys

import pytest
import yaml

from recbole_llm.benchmark import plots
from recbole_llm.benchmark.records import load_record
from recbole_llm.benchmark.stats import half_width
from recbole_llm.benchmark.suite import run_suite
from recbole_llm.benchmark.table import leaderboard

BarContainer = pytest.importorskip("matplotlib.container").BarContainer

LISTS = "f" * 64


def record(model, ndcg1, cost=None, label="uniform20", seed=2020, curve=None):
    """A hand-built suite record with what tables and plots read."""
    found = {
        "model": model,
        "seed": seed,
        "protocol": {"label": label, "lists_sha256": LISTS},
        "metrics": {"ndcg@1": ndcg1, "ndcg@10": ndcg1 + 0.1},
        "cost": cost,
        "n_users": 50,
        "epochs_run": len(curve or []),
        "wall_time": {"train_s": 1.0, "eval_s": 1.0},
        "config": {"valid_metric": "NDCG@10"},
    }
    if curve is not None:
        found["valid_curve"] = curve
    return found


def llm_records():
    return [
        record("Pop", 0.25),
        record("SASRec", 0.55),
        record("verbalizer", 0.05, {"seconds_per_user": 1.5, "tokens_per_user": 700.0}),
        record(
            "listwise", 0.06, {"seconds_per_user": 4.0, "tokens_per_user": 850.0, "parse_failure_rate": 0.1}
        ),
        record("cached", 0.04, {"seconds_per_user": None, "tokens_per_user": 7500.0}),
    ]


def points(ax):
    return {c.get_label(): tuple(c.get_offsets()[0]) for c in ax.collections}


def test_accuracy_cost_plots_each_llm_row_at_its_cost_and_the_others_as_lines():
    fig = plots.accuracy_cost_figure(llm_records(), "NDCG@1", "uniform20")
    seconds, tokens = fig.axes[:2]
    assert points(seconds) == {"verbalizer": (1.5, 0.05), "listwise": (4.0, 0.06)}
    assert points(tokens) == {
        "verbalizer": (700.0, 0.05),
        "listwise": (850.0, 0.06),
        "cached": (7500.0, 0.04),
    }
    assert "1 LLM row(s) without s/user left out" in seconds.get_title()
    assert seconds.get_xscale() == tokens.get_xscale() == "log"
    for ax in (seconds, tokens):
        assert [tuple(line.get_ydata()) for line in ax.lines] == [(0.25, 0.25), (0.55, 0.55)]
        assert [t.get_text() for t in ax.texts] == ["Pop", "SASRec"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["verbalizer", "listwise", "cached"]


def test_accuracy_cost_averages_seeds_and_needs_an_llm_row():
    seeds = [
        record("verbalizer", 0.05, {"seconds_per_user": 1.0, "tokens_per_user": 700.0}, seed=1),
        record("verbalizer", 0.07, {"seconds_per_user": 3.0, "tokens_per_user": 900.0}, seed=2),
    ]
    fig = plots.accuracy_cost_figure(seeds, "NDCG@10", "uniform20")
    assert points(fig.axes[0]) == {"verbalizer": (2.0, pytest.approx(0.16))}
    assert plots.accuracy_cost_figure([record("Pop", 0.25), record("SASRec", 0.5)], "NDCG@1", "x") is None


def test_learning_curves_draw_each_runs_curve_once_and_skip_records_without_one():
    records = [
        record("SASRec-CE", 0.3, curve=[[1, 0.10], [2, 0.15], [3, 0.17]], seed=1),
        record("SASRec-CE", 0.3, curve=[[1, 0.10], [2, 0.15], [3, 0.17]], seed=1, label="full"),
        record("SASRec-CE", 0.3, curve=[[1, 0.12], [2, 0.14]], seed=2),
        record("SASRec-BCE", 0.2, curve=[[1, 0.05], [2, 0.08]], seed=1),
        record("old", 0.2),  # written before curves were kept
    ]
    (ax,) = plots.learning_curves_figure(records).axes
    drawn = [(line.get_color(), list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines]
    assert drawn == [
        ("C0", [1, 2, 3], [0.10, 0.15, 0.17]),
        ("C0", [1, 2], [0.12, 0.14]),
        ("C1", [1, 2], [0.05, 0.08]),
    ]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SASRec-CE", "SASRec-BCE"]
    assert ax.get_ylabel() == "validation NDCG@10"
    assert plots.learning_curves_figure([record("old", 0.2), record("older", 0.1, curve=[])]) is None


def test_published_bars_hold_the_papers_values_and_our_mean_with_its_interval():
    published = {
        "source": "a paper",
        "CE": {"NDCG@10": 0.06},
        "BCE": {"NDCG@10": 0.035},
        "SCE": {"NDCG@10": 0.05},
    }
    records = [record("CE", 0.01, label="full", seed=1), record("CE", 0.03, label="full", seed=2)]
    records += [record("BCE", 0.0, label="full"), record("CE", 0.5, label="other")]
    (ax,) = plots.published_figure(records, published, "full").axes
    paper, ours = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [p.get_height() for p in paper.patches] == [0.06, 0.035, 0.05]
    heights = [p.get_height() for p in ours.patches]
    assert heights[:2] == [pytest.approx(0.12), pytest.approx(0.10)] and math.isnan(heights[2])  # no SCE
    ce_bar = ours.errorbar.lines[2][0].get_segments()[0]  # (bottom, top) of the first model's bar
    assert ce_bar[1][1] - ce_bar[0][1] == pytest.approx(2 * half_width([0.11, 0.13]))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CE", "BCE", "SCE"]


def test_write_plots_writes_png_and_svg_with_the_same_bytes_on_a_rerun(tmp_path):
    records = llm_records() + [record("SASRec", 0.5, label="full", curve=[[1, 0.1], [2, 0.2]])]
    published = {"SASRec": {"NDCG@1": 0.6}}
    links = plots.write_plots(records, tmp_path / "a", ["NDCG@1", "Recall@5"], published, "full")
    assert links.tables == {
        ("uniform20", LISTS): "Plots: [accuracy vs cost](accuracy_cost-uniform20.png) "
        "([svg](accuracy_cost-uniform20.svg))"
    }
    assert links.after_tables == [
        "Plots: [learning curves](learning_curves.png) ([svg](learning_curves.svg))"
    ]
    assert links.published.startswith("Plots: [published vs ours](published_vs_ours.png)")
    written = sorted(p.name for p in (tmp_path / "a").iterdir())
    stems = ["accuracy_cost-uniform20", "learning_curves", "published_vs_ours"]
    assert written == sorted(f"{s}.{ext}" for s in stems for ext in ("png", "svg"))
    svg = (tmp_path / "a" / "learning_curves.svg").read_bytes()
    assert b"<dc:date>" not in svg and b"Matplotlib v" not in svg, "no date, no version"
    plots.write_plots(records, tmp_path / "b", ["NDCG@1", "Recall@5"], published, "full")
    for name in written:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_tables_plot_link_is_shown_under_it():
    records = llm_records() + [record("Pop", 0.3, label="full")]
    table = leaderboard(records, ["NDCG@1"], under={("uniform20", LISTS): "Plots: [x](x.png)"})
    uniform, full = table.split("### full")
    assert uniform.rstrip().endswith("Plots: [x](x.png)") and "Plots" not in full


def test_without_matplotlib_the_tables_say_how_to_get_plots(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    links = plots.write_plots(llm_records(), tmp_path, ["NDCG@1"])
    assert links == plots.Links(after_tables=[plots.INSTALL_HINT])
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_suite_keeps_learning_curves_and_links_its_plots(tiny, tmp_path, monkeypatch):
    body = {
        "name": "tiny-plots",
        "dataset": "tiny",
        "config": {k: v for k, v in tiny.items() if k != "candidates_dir"},
        "protocols": [{"type": "full"}],
        "models": [{"model": "Pop"}, {"model": "BPR", "config": {"epochs": 3, "stopping_step": 5}}],
        "published": {"source": "a paper", "BPR": {"NDCG@10": 0.3}},
        "output": "out",
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(body))
    table = run_suite(path)
    bpr = load_record(tmp_path / "out" / "BPR__full.json")
    assert [epoch for epoch, _ in bpr["valid_curve"]] == [1, 2, 3]
    metric = bpr["config"]["valid_metric"].lower()
    assert max(score for _, score in bpr["valid_curve"]) == pytest.approx(bpr["best_valid"][metric])
    assert load_record(tmp_path / "out" / "Pop__full.json")["valid_curve"] == [], "nothing trained"
    assert "\n\nPlots: [learning curves](learning_curves.png) ([svg](learning_curves.svg))\n\n" in table
    assert table.index("learning curves") < table.index("### Published vs ours")
    assert "\n\nPlots: [published vs ours](published_vs_ours.png) ([svg](published_vs_ours.svg))\n" in table
    for stem in ("learning_curves", "published_vs_ours"):
        assert (tmp_path / "out" / f"{stem}.png").stat().st_size > 0
        assert (tmp_path / "out" / f"{stem}.svg").stat().st_size > 0
    assert "accuracy vs cost" not in table, "no LLM row"

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    table = run_suite(path)  # every record kept: only the table is written again
    assert plots.INSTALL_HINT in table and "Plots: [" not in table
    assert (tmp_path / "out" / "leaderboard.md").read_text() == table


def test_learning_curves_add_reference_curves_in_grey():
    records = [record("SASRec-CE", 0.3, curve=[[5, 0.10], [10, 0.15]], seed=1)]
    reference = {"source": "the paper's log", "paper CE": [[5, 0.12], [10, 0.2], [15, 0.25]]}
    (ax,) = plots.learning_curves_figure(records, reference).axes
    drawn = [(line.get_color(), list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines]
    assert drawn == [("C0", [5, 10], [0.10, 0.15]), ("0.45", [5, 10, 15], [0.12, 0.2, 0.25])]
    assert ax.lines[1].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SASRec-CE", "paper CE"]
