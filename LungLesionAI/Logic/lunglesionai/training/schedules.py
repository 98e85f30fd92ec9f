"""Learning-rate schedule and optimiser step shared by the project's training loops (detector, FP reduction,
universal lesions)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

__all__ = ["warmup_cosine_lr", "scheduled_step"]


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float, floor: float = 0.01) -> float:
    """Linear warm-up over ``warmup_steps`` to ``peak_lr``, then cosine decay to ``floor × peak_lr`` at
    ``total_steps`` (SGDR's cosine without restarts: Loshchilov & Hutter, ICLR 2017).

    Args:
        step: 0-based optimiser step.
        total_steps: steps of the whole run.
        warmup_steps: steps of the linear warm-up (0: none).
        peak_lr: learning rate after the warm-up.
        floor: final learning rate as a fraction of ``peak_lr``.

    Returns:
        The learning rate for ``step``.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t)))


def scheduled_step(optimiser: "torch.optim.Optimizer", loss: "torch.Tensor", step: int, total_steps: int,
                   warmup_steps: int, peak_lr: float, clip_norm: Optional[float] = None) -> float:
    """One optimiser step at :func:`warmup_cosine_lr`'s rate for ``step``: set the rate on every parameter group,
    back-propagate ``loss`` from zeroed gradients, clip their global norm to ``clip_norm`` (None: no clipping),
    step.

    Returns:
        ``loss`` as a float.
    """
    import torch

    lr = warmup_cosine_lr(step, total_steps, warmup_steps, peak_lr)
    for group in optimiser.param_groups:
        group["lr"] = lr
    optimiser.zero_grad()
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimiser.param_groups for p in g["params"]], clip_norm)
    optimiser.step()
    return float(loss.detach())
