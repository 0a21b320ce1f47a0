"""A training batch in several forward/backward passes, for models whose activations outgrow the cache.

A model with `loss_passes(interaction)` yields sub-batches with their share of the batch's loss; the
trainer backpropagates each at once, so a pass's saved activations are read back while still cached.
The gradients are the batch's (to float rounding); dropout draws its masks pass by pass.
"""

from __future__ import annotations

import torch


def passes_loss(model, interaction) -> torch.Tensor:
    """The batch's loss with its gradients already accumulated, pass by pass, in the parameters.

    Returned as a leaf that requires grad, so that the trainer's own `backward()` adds nothing.
    """
    total = torch.zeros(())
    for part, weight in model.loss_passes(interaction):
        loss = model.calculate_loss(part) * weight
        loss.backward()
        total += loss.detach().cpu()
    return total.requires_grad_()


def uses_passes(trainer, loss_func) -> bool:
    """Whether the trainer's epoch runs `passes_loss`: the model's own loss, on CPU, without AMP or DDP."""
    return (
        loss_func is None
        and hasattr(trainer.model, "loss_passes")
        and trainer.device.type == "cpu"
        and not trainer.enable_amp
        and trainer.config["single_spec"]
    )
