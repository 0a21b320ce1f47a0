"""vLLM's offline engine, for users who outgrow one machine (optional: `pip install vllm`).

Prompts are chat-formatted exactly as the hf backend does, and sent as token ids; the engine's
automatic prefix caching then encodes the instructions and history that a user's prompts share
(bootstrap permutations, point-wise questions) once, as the hf backend does by hand.

Label logits: one greedy step restricted to the labels (`allowed_token_ids`), with the engine's log
probabilities taken *after* that restriction (`logprobs_mode="processed_logprobs"`). They are the
labels' logits minus one constant per prompt, which changes no ranking, no yes-minus-no difference
and no pairwise choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from recbole_llm.llm.backend import Backend, Completion, LabelLogits, LLMError, Prompt
from recbole_llm.llm.backends.hf import chat_token_ids, first_label_tokens


@dataclass
class VLLMBackend(Backend):
    """`model_id`: a hub id or local folder vLLM can load; `engine_args` go to `vllm.LLM` as given
    (e.g. tensor_parallel_size, gpu_memory_utilization)."""

    kind = "vllm"
    dtype: str = "auto"
    engine_args: dict = field(default_factory=dict)
    max_labels: int = 128

    def __post_init__(self):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as err:
            raise LLMError(
                "llm_backend=vllm needs vLLM (a GPU machine): pip install vllm; or use llm_backend=hf."
            ) from err
        self._sampling = SamplingParams
        self.settings = {"dtype": self.dtype, **self.engine_args, **self.settings}
        self.engine = LLM(
            model=self.model_id,
            dtype=self.dtype,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            max_logprobs=self.max_labels,
            **self.engine_args,
        )
        self.tokenizer = self.engine.get_tokenizer()

    def _run(self, prompts: list[Prompt], params) -> list:
        requests = [{"prompt_token_ids": chat_token_ids(self.tokenizer, p)} for p in prompts]
        return self.engine.generate(requests, params, use_tqdm=False)

    def generate(
        self,
        prompts: list[Prompt],
        max_new_tokens: int,
        on_result: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        outputs = self._run(prompts, self._sampling(temperature=0.0, max_tokens=max_new_tokens))
        out = []
        for i, output in enumerate(outputs):
            answer = output.outputs[0]
            completion = Completion(answer.text, len(output.prompt_token_ids), len(answer.token_ids))
            if on_result is not None:
                on_result(i, completion)
            out.append(completion)
        return out

    def label_logits(self, prompts: list[Prompt], labels: list[str]) -> list[LabelLogits]:
        if len(labels) > self.max_labels:
            raise LLMError(f"The vllm backend reads at most {self.max_labels} labels, not {len(labels)}.")
        token_ids = first_label_tokens(self.tokenizer, labels, self.model_id)
        params = self._sampling(
            temperature=0.0, max_tokens=1, allowed_token_ids=token_ids, logprobs=len(token_ids)
        )
        out = []
        for output in self._run(prompts, params):
            (step,) = output.outputs[0].logprobs
            out.append(LabelLogits(tuple(step[t].logprob for t in token_ids), len(output.prompt_token_ids)))
        return out
