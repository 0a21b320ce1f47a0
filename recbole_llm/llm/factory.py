"""Build the configured backend (lazily importing only its stack) wrapped by the response cache."""

from __future__ import annotations

import importlib

from recbole_llm.errors import RecBoleLLMError, did_you_mean
from recbole_llm.llm.backend import Backend

BACKENDS = ("hf", "vllm", "openai", "langchain")


def _langchain_model(spec):
    """A chat model object, or "module:attribute" naming one (or a function returning one)."""
    if not isinstance(spec, str):
        return spec
    module, _, attr = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise RecBoleLLMError(f"langchain_model {spec!r} could not be imported: {err}") from err
    return target() if callable(target) and not hasattr(target, "invoke") else target


def check_backend_name(kind) -> None:
    """An unknown `llm_backend` fails before data or model loading."""
    if not isinstance(kind, Backend) and kind not in BACKENDS:
        raise RecBoleLLMError(
            f"Unknown llm_backend {kind!r}; choose from {', '.join(BACKENDS)}."
            + did_you_mean(str(kind), BACKENDS)
        )


def build_backend(config) -> Backend:
    """The backend named by `llm_backend`; from Python, `llm_backend` may also be a Backend object."""
    kind = config["llm_backend"]
    if isinstance(kind, Backend):
        backend = kind
    elif kind == "hf":
        from recbole_llm.llm.backends.hf import HFBackend

        backend = HFBackend.from_config(
            config["llm_path"],
            config["llm_gguf_file"],
            dtype=config["llm_dtype"],
            autocast=config["llm_autocast"],
            batch_size=config["llm_batch_size"],
        )
    elif kind == "vllm":
        from recbole_llm.llm.backends.vllm import VLLMBackend

        if not config["llm_path"]:
            raise RecBoleLLMError("llm_backend=vllm needs llm_path: a model id or folder that vLLM can load.")
        backend = VLLMBackend(
            model_id=config["llm_path"],
            dtype=config["llm_dtype"],
            engine_args=config["vllm_engine_args"] or {},
        )
    elif kind == "openai":
        from recbole_llm.llm.backends.openai import OpenAIBackend

        if not config["llm_path"] or not config["llm_base_url"]:
            raise RecBoleLLMError(
                "llm_backend=openai needs llm_path (the served model's name) and llm_base_url."
            )
        backend = OpenAIBackend(
            model_id=config["llm_path"],
            base_url=config["llm_base_url"],
            api_key_env=config["llm_api_key_env"],
            max_concurrency=config["llm_max_concurrency"],
        )
    elif kind == "langchain":
        from recbole_llm.llm.backends.langchain import LangChainBackend

        if config["langchain_model"] is None:
            raise RecBoleLLMError(
                "llm_backend=langchain needs langchain_model: a chat model or 'module:attr'."
            )
        backend = LangChainBackend(_langchain_model(config["langchain_model"]))
    else:
        check_backend_name(kind)
    return cached(backend, config)


def cached(backend: Backend, config) -> Backend:
    """`backend` behind the response cache in `llm_cache_dir`, or as is with `no_cache`."""
    from recbole_llm.llm.cache import with_cache

    return with_cache(backend, None if config["no_cache"] else config["llm_cache_dir"])
