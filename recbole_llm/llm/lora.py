"""A LoRA adapter (peft) on a local model of the caller's own, served as an hf backend.

The model is not the process-wide eval copy of `hf.load`: a fine-tuned ranker trains it in place, and
only the adapter's weights require grad. What it answers depends on those weights, so its identity (the
response cache's key) holds their SHA-256: a zero-shot answer, or another adapter's, is never served.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recbole_llm.llm.backend import LLMError
from recbole_llm.llm.backends.hf import HFBackend, load_model

ADAPTER_CONFIG = "adapter_config.json"  # what peft's save_pretrained writes into an adapter folder


def with_adapter(base: torch.nn.Module, lora: dict, adapter_path: str | None = None) -> torch.nn.Module:
    """`base` with a fresh LoRA adapter (`lora`: LoraConfig arguments), or the one saved in
    `adapter_path` (trainable, so that training may continue from it). Base weights are frozen."""
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError as err:
        raise LLMError("Fine-tuning an LLM ranker needs peft: pip install peft.") from err
    if adapter_path is not None:
        return PeftModel.from_pretrained(base, adapter_path, is_trainable=True)
    return get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", **lora))


def adapter_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors by name (what `save_pretrained` writes)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def adapter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the adapter's scaling settings and weights: equal digests answer alike."""
    config = model.peft_config[model.active_adapter]
    digest = hashlib.sha256(
        json.dumps({"r": config.r, "alpha": config.lora_alpha, "rslora": config.use_rslora}).encode()
    )
    for name, tensor in sorted(adapter_weights(model).items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class LoRABackend(HFBackend):
    """The hf backend over its own copy of the model with a LoRA adapter; `lora` holds LoraConfig
    arguments (r, lora_alpha, lora_dropout, target_modules), `adapter_path` a saved adapter to load.
    `gradient_checkpointing` keeps only each decoder layer's input for the backward pass and recomputes
    the rest (about one more forward per step): activation memory of long prompts drops several-fold,
    the gradients stay the same, so it is no part of the identity."""

    lora: dict = field(default_factory=dict)
    adapter_path: str | None = None
    gradient_checkpointing: bool = False

    def _load(self):
        tokenizer, base = load_model(self.model_id, self.gguf_file, self.dtype)
        if self.gradient_checkpointing:  # non-reentrant: works with a frozen base and restores RNG states
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return tokenizer, with_adapter(base, self.lora, self.adapter_path)

    def identity(self) -> dict:
        return {**super().identity(), "adapter": adapter_digest(self.model)}

    def save_adapter(self, folder: str | Path) -> None:
        """The adapter in peft's format (`save_pretrained`): reload it with `adapter_path`."""
        self.model.save_pretrained(str(folder))
