"""Markdown leaderboards from result records: means ± 95% CI, `*` where a paired test against the
suite's baseline is significant (benchmark.stats), and a legend under each table saying which."""

from __future__ import annotations

import math
import statistics

from recbole_llm.benchmark.stats import ALPHA, TEST_NAME, half_width, paired, paired_p_value, user_means

DEFAULT_COLUMNS = ("NDCG@1", "NDCG@5", "NDCG@10", "Recall@5", "Recall@10", "MRR@10")


# An LLM ranker's cost report (see LLMRanker.evaluation_report): column title -> report key.
COST_COLUMNS = {
    "parse fail": "parse_failure_rate",
    "s/user": "seconds_per_user",
    "tokens/user": "tokens_per_user",
}


_CEILING = "retriever_recall@"


def _cost_cell(reports: list[dict], key: str) -> str:
    values = [r[key] for r in reports if r.get(key) is not None]
    digits = 3 if key == "parse_failure_rate" else 4 if key.startswith(_CEILING) or key == "auc" else 1
    return _cell(values, digits) if values else "–"


def _cell(values: list[float], digits: int = 4) -> str:
    """The mean of a row's runs, ± the 95% t half-width over them when there are several (seeds)."""
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f}" + (f" ± {half_width(values):.{digits}f}" if len(values) > 1 else "")


def _user_values(runs: list[dict], metric: str) -> list[float] | None:
    """A single run's per-user values of `metric`; None for several runs or a record without them."""
    per_user = runs[0].get("per_user") if len(runs) == 1 else None
    values = per_user and per_user["values"].get(metric)
    return values if values and len(values) > 1 else None


def _metric_cell(runs: list[dict], metric: str) -> str:
    """A metric's mean, ± over the runs (several seeds) or, for one run, over its users' values."""
    users = _user_values(runs, metric)
    if users is None:
        return _cell([r["metrics"][metric] for r in runs])
    return f"{runs[0]['metrics'][metric]:.4f} ± {half_width(users):.4f}"


def _per_user_means(runs: list[dict], metric: str) -> dict[str, float] | None:
    return user_means([r.get("per_user") for r in runs], metric)


def _significant(runs: list[dict], baseline: dict[str, float] | None, metric: str) -> bool | None:
    """Whether the paired test against the baseline's per-user means is significant; None: not tested."""
    values = _per_user_means(runs, metric)
    pair = paired(values, baseline) if values and baseline else None
    return None if pair is None else paired_p_value(*pair) < ALPHA


def _interval_legend(runs: dict[str, list[dict]], columns) -> str:
    """What ± means in this table: which rows have an interval over seeds, over users, or none."""
    single = [rs for rs in runs.values() if len(rs) == 1]
    old = "records written before per-user values were kept"
    over = []
    if len(single) < len(runs):
        over.append("over a row's runs (one per seed) where it has several")
    if any(_user_values(rs, c.lower()) for rs in single for c in columns):
        over.append("over the users' per-user values of a single run (metric columns)")
    if not over:
        return f"Intervals: none; every row is a single run, and its record keeps no per-user values ({old})."
    if any(not rs[0].get("per_user") for rs in single):
        over.append(f"none for a single run without per-user values ({old})")
    return (
        "Intervals: ± is the half-width of a 95% Student-t confidence interval of the mean, "
        + "; ".join(over)
        + "."
    )


def _significance_legend(
    runs: dict[str, list[dict]], baseline: str, tested: set[str], n_users: int | None
) -> str:
    if baseline not in runs:
        return f"Significance: no `*`; the baseline {baseline} did not rank these lists."
    if n_users is None:
        return f"Significance: no `*`; the baseline {baseline} has no per-user values on these lists."
    seeds = " (each user's mean over a row's seeds)" if any(len(rs) > 1 for rs in runs.values()) else ""
    text = (
        f"Significance: `*` marks p < {ALPHA} against {baseline}, {TEST_NAME} of per-user values{seeds} "
        f"over {n_users} users, users with equal values dropped"
    )
    untested = [m for m in runs if m != baseline and m not in tested]
    if untested:
        text += f"; not tested (no per-user values on the same users): {', '.join(untested)}"
    return text + "."


def _examples_per_epoch(record: dict) -> int | None:
    """Training rows per epoch of a run under a CPU budget (`train_examples_per_epoch`, whole batches;
    EpochBudget); None for a run that trains on every row of its split."""
    config = record.get("config") or {}
    budget, batch = config.get("train_examples_per_epoch"), config.get("train_batch_size")
    return math.ceil(budget / batch) * batch if budget and batch else None


def _budget_cells(runs: list[dict]) -> list[str]:
    """`examples` trained (all epochs) and training `s/example` of a budgeted run; – otherwise, and for
    a run that trained nothing (it tested an adapter another run trained)."""
    per_epoch = [_examples_per_epoch(r) for r in runs]
    if None in per_epoch or not any(r["epochs_run"] for r in runs):
        return ["–", "–"]
    seconds = [s / n for r, n in zip(runs, per_epoch) for s in r["wall_time"].get("train_epoch_s", [])]
    examples = _cell([n * r["epochs_run"] for r, n in zip(runs, per_epoch)], 0)
    return [examples, f"{statistics.fmean(seconds):.2f}" if seconds else "–"]


IN_PROGRESS_MARK = "†"
IN_PROGRESS_LEGEND = (
    f"{IN_PROGRESS_MARK} In progress: training has not finished; the row tests the best epoch so far (by "
    "validation) of the epochs trained, from the run's resume state (`--test-progress`)."
)


def _epochs_cell(runs: list[dict]) -> str:
    """Epochs trained, marked when a run has not finished its schedule (an interim record)."""
    unfinished = any(r.get("in_progress") for r in runs)
    return _cell([r["epochs_run"] for r in runs], 0) + (f" {IN_PROGRESS_MARK}" if unfinished else "")


def _lists_note(record: dict) -> str:
    """Which candidate lists a record ranked: the content hash of its lists (and of their pool)."""
    protocol = record["protocol"]
    lists, pool = protocol.get("lists_sha256"), protocol.get("set_sha256")
    if not lists:
        return "lists not recorded"
    note = f"lists sha256 `{lists[:12]}`"
    if pool and pool != lists:
        note += f", drawn from the set `{pool[:12]}` of {protocol['set_users']} users"
    return note


def groups(records: list[dict]) -> dict[tuple[str, str | None], list[dict]]:
    """Records by (protocol label, content hash of the ranked lists): rows of one table ranked the
    same lists; a label whose records ranked different lists is split into visibly separate tables."""
    found: dict[tuple[str, str | None], list[dict]] = {}
    for r in records:
        found.setdefault((r["protocol"]["label"], r["protocol"].get("lists_sha256")), []).append(r)
    return found


def leaderboard(
    records: list[dict],
    columns=DEFAULT_COLUMNS,
    baseline: str | None = None,
    under: dict[tuple[str, str | None], str] | None = None,
) -> str:
    """One table per protocol and candidate lists, models in suite order; the best mean in bold, `*`
    where a model differs significantly from `baseline` (a model name) on the same lists. `under` maps
    a table's key in `groups` to a line shown below it (e.g. links to its plots)."""
    out = []
    tables = groups(records)
    labels = [label for label, _ in tables]
    for key, group in tables.items():
        label = key[0]
        runs: dict[str, list[dict]] = {}
        for r in group:
            runs.setdefault(r["model"], []).append(r)
        means = {
            (model, c): statistics.fmean([r["metrics"][c.lower()] for r in rs])
            for model, rs in runs.items()
            for c in columns
            if all(c.lower() in r["metrics"] for r in rs)
        }
        best = {c: max((v for (_, col), v in means.items() if col == c), default=None) for c in columns}
        users = next(iter(runs.values()))[0]["n_users"]
        costs = any(r.get("cost") for rs in runs.values() for r in rs)
        cost_keys = dict(COST_COLUMNS) if costs else {}
        # A two-stage pipeline's retriever Recall@k: the ceiling of its ranker, beside its own metrics.
        reports = [r.get("cost") or {} for rs in runs.values() for r in rs]
        ceilings = {k for report in reports for k in report if k.startswith(_CEILING)}
        cost_keys.update({k.replace("_", " "): k for k in sorted(ceilings)})
        if any(report.get("auc") is not None for report in reports):  # a point-wise ranker's (TALLRec's) AUC
            cost_keys["AUC"] = "auc"
        extra = list(cost_keys)
        budgets = any(_examples_per_epoch(r) for rs in runs.values() for r in rs)
        extra += ["examples", "s/example"] if budgets else []
        heading = f"### {label} ({users} test users; {_lists_note(group[0])})"
        if labels.count(label) > 1:
            heading += " — DIFFERENT LISTS from the other tables of this protocol: do not compare"
        out += [heading, ""]
        out.append(
            "| model | " + " | ".join([*columns, *extra]) + " | runs | epochs | train s | s/epoch | eval s |"
        )
        out.append("|---" * (len(columns) + len(extra) + 6) + "|")
        base = {c: _per_user_means(runs[baseline], c.lower()) if baseline in runs else None for c in columns}
        marks = {
            (model, c): _significant(rs, base[c], c.lower())
            for model, rs in runs.items()
            for c in columns
            if model != baseline and (model, c) in means
        }
        for model, rs in runs.items():
            cells = []
            for c in columns:
                if (model, c) not in means:
                    cells.append("–")
                    continue
                text = _metric_cell(rs, c.lower())
                text = f"**{text}**" if means[model, c] == best[c] else text
                cells.append(text + " *" if marks.get((model, c)) else text)
            cells += [_cost_cell([r.get("cost") or {} for r in rs], key) for key in cost_keys.values()]
            cells += _budget_cells(rs) if budgets else []
            epoch_s = [s for r in rs for s in r["wall_time"].get("train_epoch_s", [])]
            cells += [
                str(len(rs)),
                _epochs_cell(rs),
                _cell([r["wall_time"]["train_s"] for r in rs], 0),
                f"{statistics.fmean(epoch_s):.2f}" if epoch_s else "–",
                _cell([r["wall_time"]["eval_s"] for r in rs], 1),
            ]
            out.append(f"| {model} | " + " | ".join(cells) + " |")
        out += ["", _interval_legend(runs, columns), ""]
        if any(r.get("in_progress") for r in group):
            out += [IN_PROGRESS_LEGEND, ""]
        if baseline is not None:
            tested = {model for (model, _), mark in marks.items() if mark is not None}
            paired_users = next((len(b) for b in base.values() if b), None)
            out += [_significance_legend(runs, baseline, tested, paired_users), ""]
        if under and key in under:
            out += [under[key], ""]
    return "\n".join(out)


def published_comparison(records: list[dict], published: dict, label: str) -> str:
    """Published numbers next to ours (mean over seeds) for protocol `label`, with relative gaps.

    `published` maps a model name to {column: value}; its optional `source` key names the paper.
    """
    runs: dict[str, list[dict]] = {}
    for r in records:
        if r["protocol"]["label"] == label:
            runs.setdefault(r["model"], []).append(r)
    columns = list(dict.fromkeys(c for m, v in published.items() if m != "source" for c in v))
    head = " | ".join(f"{c} published | {c} ours | gap" for c in columns)
    out = [
        f"### Published vs ours ({label}; published: {published.get('source', 'see suite file')})",
        "",
        f"| model | {head} | seeds | epochs | train s |",
        "|---" * (3 * len(columns) + 4) + "|",
    ]
    for model, values in published.items():
        if model == "source":
            continue
        rs = runs.get(model, [])
        cells = []
        for c in columns:
            ours = [r["metrics"][c.lower()] for r in rs if c.lower() in r["metrics"]]
            ref = values.get(c)
            cells.append("–" if ref is None else f"{ref:.4f}")
            cells.append(_cell(ours) if ours else "–")
            gap = (statistics.fmean(ours) - ref) / ref if ours and ref else None
            cells.append("–" if gap is None else f"{gap:+.0%}")
        cells += [
            str(len(rs)),
            _epochs_cell(rs) if rs else "–",
            _cell([r["wall_time"]["train_s"] for r in rs], 0) if rs else "–",
        ]
        out.append(f"| {model} | " + " | ".join(cells) + " |")
    if any(len(rs) > 1 for rs in runs.values()):
        out += ["", "Ours: the mean over seeds ± the half-width of its 95% Student-t confidence interval."]
    if any(r.get("in_progress") for rs in runs.values() for r in rs):
        out += ["", IN_PROGRESS_LEGEND]
    return "\n".join([*out, ""])
