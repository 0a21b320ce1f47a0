"""FAISS indexes over unit-length item vectors, so that inner product is cosine similarity.

`flat` is exact; `ivf` (an inverted file: `nprobe` of `nlist` k-means cells searched) and `hnsw` (a
graph: `M` links per node, `efConstruction`/`efSearch` candidate lists) trade recall for speed on
large catalogues. Parameter names are FAISS's own.
"""

from __future__ import annotations

import logging

import numpy as np

from recbole_llm.errors import RecBoleLLMError, did_you_mean

INDEX_TYPES: dict[str, dict[str, int]] = {
    "flat": {},
    "ivf": {"nlist": 100, "nprobe": 10},
    "hnsw": {"M": 32, "efConstruction": 40, "efSearch": 64},
}


def index_settings(block) -> dict:
    """The `index` block checked and completed with its type's defaults, e.g. {type: ivf, nlist: 100, ...}."""
    block = {"type": block} if isinstance(block, str) else block
    if not isinstance(block, dict):
        raise RecBoleLLMError(f"index must be a mapping such as {{type: hnsw, M: 32}}, not {block!r}.")
    block = dict(block)
    kind = block.pop("type", "flat")
    if kind not in INDEX_TYPES:
        raise RecBoleLLMError(
            f"Unknown index type {kind!r}; choose from {', '.join(INDEX_TYPES)}."
            + did_you_mean(str(kind), INDEX_TYPES)
        )
    defaults = INDEX_TYPES[kind]
    for key, value in block.items():
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise RecBoleLLMError(
                f"index type {kind} has no parameter {key!r} (it has: {known})." + did_you_mean(key, defaults)
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RecBoleLLMError(f"index.{key} must be a positive integer, not {value!r}.")
    return {"type": kind, **defaults, **block}


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (all-zero rows, such as the padding item's, stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1)).astype(np.float32)


def build_index(vectors: np.ndarray, settings: dict):
    """A FAISS inner-product index holding `vectors` (rows: ids 0..n-1), as `index_settings` describes."""
    # faiss-cpu's loader logs, at INFO, a ModuleNotFoundError per CPU-specific build it probes for.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError as err:
        raise RecBoleLLMError("The index needs FAISS: pip install 'recbole-llm[retrieval]'.") from err
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    kind = settings["type"]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        if settings["nlist"] > n:
            raise RecBoleLLMError(f"index.nlist ({settings['nlist']}) exceeds the {n} items; lower it.")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, settings["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = settings["nprobe"]
    else:
        index = faiss.IndexHNSWFlat(d, settings["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings["efConstruction"]
        index.hnsw.efSearch = settings["efSearch"]
    index.add(vectors)
    return index
