"""Figures beside a suite's leaderboard.md, each as PNG and SVG: accuracy vs LLM cost per table,
learning curves (validation score per epoch), published vs ours. Tables say what; figures show the
trade-offs and the training budgets that tables flatten into one number.

matplotlib is optional (`pip install 'recbole-llm[plots]'`); without it the tables are still written,
with one line saying so. Figures use matplotlib's object API, never pyplot (no GUI backend, no global
figure list); PNGs are drawn by Agg. Drawn under matplotlib's default style (not the user's rc file),
at a fixed size, with no date or matplotlib version in the metadata and a fixed SVG id salt, a rerun
writes the same bytes (given the same matplotlib and fonts).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recbole_llm.benchmark.stats import half_width
from recbole_llm.benchmark.table import groups

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL_HINT = "Plots: not drawn; they need matplotlib: `pip install 'recbole-llm[plots]'`."
# An LLM ranker's cost report key -> axis title (see LLMRanker.evaluation_report).
COSTS = {"seconds_per_user": "s/user", "tokens_per_user": "tokens/user"}
_DPI = 100
_MARKERS = "osD^vPX"


@dataclass
class Links:
    """Markdown lines linking the written figures, by the place leaderboard.md shows them."""

    # Under a table, by its key in table.groups.
    tables: dict[tuple[str, str | None], str] = field(default_factory=dict)
    after_tables: list[str] = field(default_factory=list)  # below all tables
    published: str | None = None  # under the published comparison


def metric_column(columns: Sequence[str]) -> str:
    """The accuracy plotted against cost: the suite's first NDCG column, else its first column."""
    return next((c for c in columns if c.lower().startswith("ndcg")), columns[0])


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _by_model(records: list[dict]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for r in records:
        runs.setdefault(r["model"], []).append(r)
    return runs


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _metric(runs: list[dict], metric: str) -> float | None:
    """A row's mean of `metric` over its runs (seeds), as its table cell shows it."""
    return _mean([r["metrics"].get(metric) for r in runs])


def _cost(runs: list[dict], key: str) -> float | None:
    return _mean([(r.get("cost") or {}).get(key) for r in runs])


def _is_llm(runs: list[dict]) -> bool:
    return any(key in (r.get("cost") or {}) for r in runs for key in COSTS)


def _log_tick(value: float, _position) -> str:
    """Plain numbers at 1, 2 and 5 times a power of ten: matplotlib's 2x10^3-style minor labels
    overlap when a cost spans less than a decade or two."""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(mantissa, 6) in (1, 2, 5) else ""


def accuracy_cost_figure(records: list[dict], column: str, title: str) -> Figure | None:
    """`column` against each LLM row's s/user and tokens/user (log scales), for the records of one
    table; rows without an LLM cost (Pop, SASRec) as labelled horizontal lines: the level an LLM
    ranker has to reach. None when no row reports an LLM cost. A row without a value in a panel (an
    evaluation that read cached answers has no s/user) is left out of that panel, and counted."""
    from matplotlib.ticker import FuncFormatter

    runs = _by_model(records)
    llm = [model for model, rs in runs.items() if _is_llm(rs)]
    if not llm:
        return None
    metric = column.lower()
    fig = _figure(11, 4.5)
    axes = fig.subplots(1, len(COSTS), sharey=True)
    handles = {}
    for ax, (key, name) in zip(axes, COSTS.items()):
        left_out = 0
        for i, model in enumerate(llm):
            x, y = _cost(runs[model], key), _metric(runs[model], metric)
            if x is None or y is None:
                left_out += 1
                continue
            # Ten colours, then the next marker: every row keeps its own look in both panels.
            marker = _MARKERS[i // 10 % len(_MARKERS)]
            handles[model] = ax.scatter([x], [y], color=f"C{i % 10}", marker=marker, label=model)
        if left_out < len(llm):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(_log_tick))
            ax.xaxis.set_minor_formatter(FuncFormatter(_log_tick))
        for model, rs in runs.items():
            y = _metric(rs, metric)
            if model not in llm and y is not None:
                ax.axhline(y, color="0.5", linestyle="--", linewidth=1, label=f"_{model}")
                ax.text(0.01, y, model, transform=ax.get_yaxis_transform(), va="bottom", color="0.35")
        ax.set_xlabel(f"{name} (log scale)")
        ax.set_title(f"{left_out} LLM row(s) without {name} left out" if left_out else "")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(column)
    fig.suptitle(title)
    shown = [model for model in llm if model in handles]
    fig.legend([handles[m] for m in shown], shown, loc="outside right center", fontsize="small")
    return fig


def _curves(records: list[dict]) -> dict[tuple[str, int], list]:
    """Each run's (model, seed) learning curve once: a run's records on several protocols share it."""
    curves: dict[tuple[str, int], list] = {}
    for r in records:
        if r.get("valid_curve"):
            curves.setdefault((r["model"], r["seed"]), r["valid_curve"])
    return curves


def learning_curves_figure(records: list[dict], reference: dict | None = None) -> Figure | None:
    """Validation score after each epoch, one line per run, a model's seeds in one colour: whether a
    model was still improving when its epoch budget ended. `reference` (a suite's `reference_curves`:
    label -> [[epoch, score], ...], `source` aside) adds dashed grey lines, e.g. a paper's own training
    log, to show where ours part from it. None when no record keeps a curve (records written before
    curves were kept)."""
    from matplotlib.ticker import MaxNLocator

    curves = _curves(records)
    if not curves:
        return None
    metrics = {(r.get("config") or {}).get("valid_metric") for r in records if r.get("valid_curve")}
    models = list(dict.fromkeys(model for model, _ in curves))
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    labelled = set()
    for (model, _), curve in curves.items():
        epochs, scores = zip(*curve)
        label = model if model not in labelled else f"_{model}"
        labelled.add(model)
        ax.plot(epochs, scores, marker=".", color=f"C{models.index(model) % 10}", label=label)
    references = {k: v for k, v in (reference or {}).items() if k != "source"}
    for k, (label, curve) in enumerate(references.items()):
        epochs, scores = zip(*curve)
        ax.plot(epochs, scores, linestyle=("--", ":", "-.")[k % 3], color="0.45", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epochs trained")
    metric = metrics.pop() if len(metrics) == 1 else None
    ax.set_ylabel(f"validation {metric}" if metric else "validation score")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def published_figure(records: list[dict], published: dict, label: str) -> Figure | None:
    """Per published column, the paper's value and ours side by side for each model (ours: the mean
    over seeds, with its 95% interval when there are several). None without published models."""
    runs = _by_model([r for r in records if r["protocol"]["label"] == label])
    models = [m for m in published if m != "source"]
    columns = list(dict.fromkeys(c for m in models for c in published[m]))
    if not columns:
        return None
    fig = _figure(max(6, 3.2 * len(columns)), 4.5)
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    width, xs = 0.4, range(len(models))
    for ax, column in zip(axes, columns):
        ours = [
            [r["metrics"][column.lower()] for r in runs.get(m, []) if column.lower() in r["metrics"]]
            for m in models
        ]
        reference = [published[m].get(column, math.nan) for m in models]
        errors = [half_width(v) if len(v) > 1 else 0.0 for v in ours]
        ax.bar([x - width / 2 for x in xs], reference, width, color="0.6", label="published")
        ax.bar(
            [x + width / 2 for x in xs],
            [statistics.fmean(v) if v else math.nan for v in ours],
            width,
            yerr=errors if any(errors) else None,
            color="C0",
            label="ours",
        )
        ax.set_xticks(list(xs), models, rotation=30, ha="right")
        ax.set_title(column)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(
        f"{label}: published ({published.get('source', 'see suite file')}) vs ours", fontsize="medium"
    )
    return fig


@contextmanager
def _style():
    """matplotlib's default style whatever the user's rc file says, and SVG ids from a fixed salt
    instead of a random one: the same records give the same files."""
    from matplotlib import style

    with style.context(["default", {"svg.hashsalt": "recbole-llm"}]):
        yield


def _save(fig: Figure, folder: Path, stem: str, title: str) -> str:
    """Write `stem`.png and `stem`.svg; return the Markdown line linking them."""
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"{stem}.png", metadata={"Software": None})
    fig.savefig(folder / f"{stem}.svg", metadata={"Date": None, "Creator": None})
    return f"Plots: [{title}]({stem}.png) ([svg]({stem}.svg))"


def write_plots(
    records: list[dict],
    folder: Path,
    columns: Sequence[str],
    published: dict | None = None,
    published_label: str | None = None,
    reference_curves: dict | None = None,
) -> Links:
    """Draw every figure the records allow into `folder`; the Markdown links to them, by place."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return Links(after_tables=[INSTALL_HINT])
    links = Links()
    column = metric_column(columns)
    with _style():
        tables = groups(records)
        labels = [label for label, _ in tables]
        for (label, lists), group in tables.items():
            stem = f"accuracy_cost-{label}"
            if labels.count(label) > 1:  # one protocol, different lists: one figure per table
                stem += f"-{(lists or 'unrecorded')[:12]}"
            fig = accuracy_cost_figure(group, column, f"{label}: {column} vs LLM cost per user")
            if fig is not None:
                links.tables[label, lists] = _save(fig, folder, stem, "accuracy vs cost")
        fig = learning_curves_figure(records, reference_curves)
        if fig is not None:
            line = _save(fig, folder, "learning_curves", "learning curves")
            if reference_curves and reference_curves.get("source"):
                line += f"; grey: {reference_curves['source']}"
            links.after_tables.append(line)
        fig = published_figure(records, published, published_label) if published else None
        if fig is not None:
            links.published = _save(fig, folder, "published_vs_ours", "published vs ours")
    return links
