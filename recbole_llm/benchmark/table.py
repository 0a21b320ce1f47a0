"""Markdown leaderboards from result records (several seeds of a model: mean ± std)."""

from __future__ import annotations

import statistics

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
    digits = 3 if key == "parse_failure_rate" else 4 if key.startswith(_CEILING) else 1
    return _cell(values, digits) if values else "–"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: list[float], digits: int = 4) -> str:
    mean, std = _mean_std(values)
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if len(values) > 1 else "")


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


def _groups(records: list[dict]) -> dict[tuple[str, str | None], list[dict]]:
    """Records by (protocol label, content hash of the ranked lists): rows of one table ranked the
    same lists; a label whose records ranked different lists is split into visibly separate tables."""
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for r in records:
        groups.setdefault((r["protocol"]["label"], r["protocol"].get("lists_sha256")), []).append(r)
    return groups


def leaderboard(records: list[dict], columns=DEFAULT_COLUMNS) -> str:
    """One table per protocol and candidate lists, models in suite order; the best mean in bold."""
    out = []
    groups = _groups(records)
    labels = [label for label, _ in groups]
    for (label, _), group in groups.items():
        runs: dict[str, list[dict]] = {}
        for r in group:
            runs.setdefault(r["model"], []).append(r)
        means = {
            (model, c): _mean_std([r["metrics"][c.lower()] for r in rs])[0]
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
        extra = list(cost_keys)
        heading = f"### {label} ({users} test users; {_lists_note(group[0])})"
        if labels.count(label) > 1:
            heading += " — DIFFERENT LISTS from the other tables of this protocol: do not compare"
        out += [heading, ""]
        out.append(
            "| model | " + " | ".join([*columns, *extra]) + " | runs | epochs | train s | s/epoch | eval s |"
        )
        out.append("|---" * (len(columns) + len(extra) + 6) + "|")
        for model, rs in runs.items():
            cells = []
            for c in columns:
                if (model, c) not in means:
                    cells.append("–")
                    continue
                text = _cell([r["metrics"][c.lower()] for r in rs])
                cells.append(f"**{text}**" if means[model, c] == best[c] else text)
            cells += [_cost_cell([r.get("cost") or {} for r in rs], key) for key in cost_keys.values()]
            epoch_s = [s for r in rs for s in r["wall_time"].get("train_epoch_s", [])]
            cells += [
                str(len(rs)),
                _cell([r["epochs_run"] for r in rs], 0),
                _cell([r["wall_time"]["train_s"] for r in rs], 0),
                f"{statistics.fmean(epoch_s):.2f}" if epoch_s else "–",
                _cell([r["wall_time"]["eval_s"] for r in rs], 1),
            ]
            out.append(f"| {model} | " + " | ".join(cells) + " |")
        out.append("")
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
            gap = (_mean_std(ours)[0] - ref) / ref if ours and ref else None
            cells.append("–" if gap is None else f"{gap:+.0%}")
        cells += [
            str(len(rs)),
            _cell([r["epochs_run"] for r in rs], 0) if rs else "–",
            _cell([r["wall_time"]["train_s"] for r in rs], 0) if rs else "–",
        ]
        out.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join([*out, ""])
