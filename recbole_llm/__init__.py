"""recbole-llm: LLM-based and classical recommenders on one RecBole protocol."""

__version__ = "0.1.0"

from recbole_llm.errors import RecBoleLLMError
from recbole_llm.registry import get_model, get_trainer, register_model

__all__ = ["RecBoleLLMError", "__version__", "get_model", "get_trainer", "register_model", "run"]


def __getattr__(name: str):
    # `run` pulls in data and trainer modules; import it only when asked for.
    if name == "run":
        from recbole_llm.quick_start import run

        return run
    raise AttributeError(f"module 'recbole_llm' has no attribute {name!r}")
