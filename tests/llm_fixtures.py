"""Test LLMs: a tiny random Llama with a byte-level tokenizer and a chat template, written to disk (no
download), and a scripted backend whose only preference is the first candidate shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from recbole_llm.llm.backend import Backend, Completion, LabelLogits
from tests.conftest import write_tiny_dataset

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass
class FirstShownWins(Backend):
    """An LLM with pure position bias: it always prefers the candidate shown first (label A)."""

    kind = "scripted"
    model_id: str = "first-shown"
    calls: list = field(default_factory=list)

    def generate(self, prompts, max_new_tokens, on_result=None):
        self.calls += prompts
        return [Completion("A", 10, 1) for _ in prompts]

    def label_logits(self, prompts, labels):
        self.calls += prompts
        return [LabelLogits(tuple([5.0] + [0.0] * (len(labels) - 1)), 10) for _ in prompts]


def write_tiny_llama(folder: Path, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    vocab["<eos>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<eos>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=vocab["<eos>"],
        pad_token_id=vocab["<eos>"],
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def finetune_settings(tiny: dict, llama: str, tmp_path: Path, n: int, **overrides) -> dict:
    """A fine-tuned ranker's test config: test and validation lists of `n` candidates for every user,
    training lists as long, the tiny llama, no LoRA dropout (repeatable steps) and no training unless
    a test asks for `epochs`."""
    return {
        **tiny,
        "candidates": {"type": "uniform", "size": n},
        "valid_candidates": {"type": "uniform", "size": n},
        "eval_users": None,
        "item_text": "{title}",
        "llm_path": llama,
        "llm_cache_dir": str(tmp_path / "cache"),
        "max_his_len": 3,
        "train_num_negatives": n - 1,
        "lora_dropout": 0.0,
        "train_batch_size": 8,
        "epochs": 0,
        **overrides,
    }


def write_rated_dataset(root, name="rated"):
    """8 users with 8 rated items each, the `tiny` layout plus a rating column."""
    write_tiny_dataset(root, name, n_users=8, n_items=30, per_user=8, rated=True)


# Helpers of the fine-tuned rankers' tests (adapter weights by name; the adapter made to matter).
def lora_params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def base_params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" not in k}


def perturb_adapter(model, seed: int = 0) -> None:
    """LoRA's B starts at zero (the adapter changes nothing); random B makes the adapter matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


def train_batch(trained, rows: int):
    return next(iter(trained.split.train))[:rows]
