"""Markdown leaderboards from result records."""

from __future__ import annotations

DEFAULT_COLUMNS = ("NDCG@1", "NDCG@5", "NDCG@10", "Recall@5", "Recall@10", "MRR@10")


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def leaderboard(records: list[dict], columns=DEFAULT_COLUMNS) -> str:
    """One table per protocol, models in suite order; metrics bold where best in the table."""
    out = []
    for label in dict.fromkeys(r["protocol"]["label"] for r in records):
        rows = [r for r in records if r["protocol"]["label"] == label]
        best = {c: max(r["metrics"].get(c.lower(), float("-inf")) for r in rows) for c in columns}
        users = rows[0]["n_users"]
        out += [f"### {label} ({users} test users)", ""]
        out.append("| model | " + " | ".join(columns) + " | epochs | train s | eval s |")
        out.append("|---" * (len(columns) + 4) + "|")
        for r in rows:
            cells = []
            for c in columns:
                v = r["metrics"].get(c.lower())
                text = "–" if v is None else _cell(v)
                cells.append(f"**{text}**" if v is not None and v == best[c] else text)
            times = r["wall_time"]
            out.append(
                f"| {r['model']} | "
                + " | ".join(cells)
                + f" | {r['epochs_run']} | {times['train_s']:.0f} | {times['eval_s']:.1f} |"
            )
        out.append("")
    return "\n".join(out)
