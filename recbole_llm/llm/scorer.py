"""LabelScorer: the next-token logits of the candidate labels after each prompt, as a torch module.

One code path serves inference and training: the hf backend calls it under `no_grad` on the shared
eval-mode model (with the KV cache of a prefix its prompts share), and a fine-tuned ranker calls it
with gradients on its own trainable copy, so what is trained is exactly what is evaluated. Prompts are
left-padded, with an explicit attention mask and position ids, so that padding changes no logit;
`teacher_forced` runs prompts with their target answers the same way, for generative fine-tuning.
With `autocast`, the forward runs under bfloat16 autocast over float32 weights: on CPUs with bf16 units
(AMX) a LoRA training step costs about half of a float32 one, and the adapter's weights and optimiser
state stay in float32.
"""

from __future__ import annotations

import copy

import torch


class LabelScorer(torch.nn.Module):
    """`model` (a causal LM) scoring batches of tokenized prompts; `pad_token_id` fills the left padding."""

    def __init__(self, model: torch.nn.Module, pad_token_id: int, autocast: bool = False):
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id
        self.autocast = autocast

    def forward(
        self, encoded: list[list[int]], label_ids: list[int], shared: int = 0, prefix=None
    ) -> torch.Tensor:
        """Logits [B, n_labels] of each label's token as the next token after each prompt."""
        output, _, _ = self._run(encoded, shared, prefix, use_cache=prefix is not None)
        logits = output.logits[:, -1].float()
        return logits[:, torch.as_tensor(label_ids, device=logits.device)]

    def prefill(self, encoded: list[list[int]], shared: int = 0, prefix=None) -> tuple[torch.Tensor, dict]:
        """Next-token logits [B, V] after each prompt, and the decoding state to continue from."""
        output, mask, positions = self._run(encoded, shared, prefix, use_cache=True)
        state = {"cache": output.past_key_values, "mask": mask, "next_position": positions[:, -1] + 1}
        return output.logits[:, -1].float(), state

    def teacher_forced(self, encoded: list[list[int]], targets: list[list[int]]) -> list[torch.Tensor]:
        """Per prompt, the logits [len(target), V] that predict each token of its target answer, given
        the prompt and the target's earlier tokens: one forward over prompt + target (teacher forcing)."""
        longest = max(map(len, targets))
        joined = [ids + target[:-1] for ids, target in zip(encoded, targets)]
        output, _, _ = self._run(joined, 0, None, use_cache=False, keep=longest)
        logits = output.logits.float()  # left padding: every row's target ends at the last position
        return [logits[row, longest - len(target) :] for row, target in enumerate(targets)]

    def _run(self, encoded: list[list[int]], shared: int, prefix, use_cache: bool, keep: int = 1):
        """One forward of the prompts' tokens after the first `shared` ones, whose KV cache `prefix`
        holds (None: `shared` is 0); the language-model head runs on the last `keep` positions only."""
        device = next(self.model.parameters()).device
        cache = None
        if prefix is not None:
            cache = copy.deepcopy(prefix)  # the prefix may serve further batches
            cache.batch_repeat_interleave(len(encoded))
        suffixes = [ids[shared:] for ids in encoded]
        width = max(map(len, suffixes))
        input_ids = torch.tensor(
            [[self.pad_token_id] * (width - len(s)) + s for s in suffixes], device=device
        )
        suffix_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=device)
        mask = torch.cat([torch.ones(len(encoded), shared, dtype=torch.long, device=device), suffix_mask], 1)
        positions = (shared + suffix_mask.cumsum(1) - 1).clamp(min=shared)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast):
            output = self.model(
                input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=use_cache,
                logits_to_keep=keep,
            )
        return output, mask, positions
