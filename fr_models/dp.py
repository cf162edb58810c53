"""DP-SGD training of an FR model, through Opacus: the standard differential-privacy defence the mixing defences are
compared with (``examples/train_fr.py --defence dpsgd``).

Opacus (maintained by Meta) computes the per-sample gradients, clips each to ``max_grad_norm``, adds Gaussian
noise of ``noise_multiplier * max_grad_norm`` and keeps the privacy account (RDP). We use it rather than our own
code because the accounting is the part that is easy to get subtly wrong. Batches are drawn by Poisson sampling
(each face independently with rate ``batch_size / N``), which is what the accountant assumes; the number of
updates is the same as :func:`fr_models.training.fit`'s (``epochs * (N // batch_size)``).

The model must be built with ``FRConfig(norm="group")``: batch norm mixes the samples of a batch, so a
per-sample gradient (and its clipping) is not defined for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fr_models.trainer import FRTrainer
from fr_models.training import FlipDraw, check_schedule

__all__ = ["fit_dp"]


class _Loss(nn.Module):
    """Backbone and head as one module whose output is the per-sample loss (what Opacus wraps)."""

    def __init__(self, trainer: FRTrainer) -> None:
        super().__init__()
        self.backbone = trainer.backbone
        self.head = trainer.head

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x), y)


def fit_dp(
    trainer: FRTrainer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 64,
    seed: int = 0,
    noise_multiplier: float = 1.0,
    max_grad_norm: float = 1.0,
    delta: float = 1e-5,
    flip: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``trainer``'s model with DP-SGD for ``epochs * (N // batch_size)`` updates.

    :param trainer: the FR model (built with ``norm="group"``) and its optimiser, which DP-SGD wraps.
    :param inputs: ``(N, ...)`` model inputs.
    :param labels: ``(N,)`` identities.
    :param epochs: passes over the data (>= 1), as in :func:`fr_models.training.fit`.
    :param batch_size: expected faces per update (Poisson sampling).
    :param seed: seed of the sampling, the flips and the noise.
    :param noise_multiplier: noise standard deviation over the clipping norm (> 0).
    :param max_grad_norm: per-sample gradient clipping norm (> 0).
    :param delta: the delta of the reported (epsilon, delta) guarantee.
    :param flip: mirrors a batch; each face is mirrored with probability 1/2 (``None``: no mirroring).
    :param progress: show a progress bar over updates.
    :return: ``epsilon`` (spent, at ``delta``), ``delta``, ``noise_multiplier``, ``max_grad_norm``,
        ``sample_rate``, ``updates``, ``epoch_seconds`` and ``epoch_losses`` (as ``fit``).
    :raises ValueError: bad arguments, or a model with batch norm.
    """
    from opacus import GradSampleModule
    from opacus.accountants import RDPAccountant
    from opacus.optimizers import DPOptimizer

    n = len(inputs)
    check_schedule(n, epochs, batch_size)
    if not (noise_multiplier > 0 and max_grad_norm > 0 and 0 < delta < 1):
        raise ValueError(f"need noise_multiplier > 0, max_grad_norm > 0 and 0 < delta < 1, got {noise_multiplier}, "
                         f"{max_grad_norm}, {delta}")
    if trainer.config.norm != "group":
        raise ValueError(f"DP-SGD needs a model without batch norm: build it with FRConfig(norm='group'), got "
                         f"norm={trainer.config.norm!r}")
    per_epoch, rate = n // batch_size, batch_size / n
    module = GradSampleModule(_Loss(trainer), loss_reduction="mean")
    gen = torch.Generator(device=inputs.device).manual_seed(seed)
    optimizer = DPOptimizer(trainer.optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                            expected_batch_size=batch_size, loss_reduction="mean", generator=gen)
    accountant = RDPAccountant()
    rng = np.random.default_rng(seed)
    draw = FlipDraw(inputs, flip)
    seconds, losses = [], []
    module.train()
    bar = tqdm(total=epochs * per_epoch, desc="DP-SGD updates", disable=not progress)
    for _ in range(epochs):
        t0 = time.perf_counter()
        total, count = 0.0, 0
        for _ in range(per_epoch):
            idx = torch.from_numpy(np.flatnonzero(rng.random(n) < rate)).to(inputs.device)
            accountant.step(noise_multiplier=noise_multiplier, sample_rate=rate)
            bar.update(1)
            if len(idx) == 0:  # an empty Poisson batch: no update, but it was still a step of the account
                continue
            x, y = draw(idx, rng), labels[idx]
            optimizer.zero_grad(set_to_none=True)
            loss = module(x, y).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite DP-SGD loss at update {trainer.updates}")
            loss.backward()
            optimizer.step()
            trainer.updates, total, count = trainer.updates + 1, total + float(loss.detach()), count + 1
        seconds.append(time.perf_counter() - t0)
        losses.append(total / max(count, 1))
    bar.close()
    optimizer.zero_grad(set_to_none=True)
    module._close()  # remove Opacus's hooks: the trainer's modules are plain modules again
    return {"epsilon": float(accountant.get_epsilon(delta)), "delta": delta, "noise_multiplier": noise_multiplier,
            "max_grad_norm": max_grad_norm, "sample_rate": rate, "updates": trainer.updates,
            "epoch_seconds": seconds, "epoch_losses": losses}
