"""Plain supervised FR training over epochs (no RL): the loop behind ``examples/train_fr.py``.

Mixing and flipping are passed in as functions, so this module needs nothing from ``mixup_env``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fr_models.trainer import FRTrainer

__all__ = ["MixFn", "fit", "random_flip"]

#: ``(inputs, labels, generator) -> (mixed inputs, soft labels)``.
MixFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def random_flip(x: torch.Tensor, flip: Callable[[torch.Tensor], torch.Tensor], rng: np.random.Generator) -> torch.Tensor:
    """Mirror each item of the batch ``x`` with probability 1/2 (one draw per item from ``rng``)."""
    which = torch.from_numpy(rng.random(len(x)) < 0.5).to(x.device)
    return torch.where(which.view(-1, *([1] * (x.ndim - 1))), flip(x), x)


def fit(
    trainer: FRTrainer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 64,
    seed: int = 0,
    mix: MixFn | None = None,
    flip: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train for ``epochs`` passes over ``inputs`` in shuffled mini-batches (the last partial batch is dropped).

    :param trainer: the FR model and optimiser.
    :param inputs: ``(N, ...)`` model inputs (pixels or masked frequency channels).
    :param labels: ``(N,)`` identities.
    :param epochs: passes over the data (>= 1).
    :param batch_size: faces per update.
    :param seed: seed of the order, the flips and the mixing.
    :param mix: turns a clean batch into a mixed one with soft labels (``None``: train on clean faces).
    :param flip: mirrors a batch; each face is mirrored with probability 1/2 (``None``: no mirroring).
    :param progress: show a progress bar over epochs.
    :return: ``epoch_seconds`` (training time per epoch), ``epoch_losses`` (mean loss per epoch), ``updates``.
    """
    if epochs < 1 or batch_size < 1 or len(inputs) < batch_size:
        raise ValueError(f"need epochs >= 1 and 1 <= batch_size <= {len(inputs)} images, got epochs={epochs}, "
                         f"batch_size={batch_size}")
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=inputs.device).manual_seed(seed)
    seconds, losses = [], []
    for _ in tqdm(range(epochs), desc="epochs", disable=not progress):
        t0 = time.perf_counter()
        order = torch.from_numpy(rng.permutation(len(inputs))).to(inputs.device)
        total, count = 0.0, 0
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            x, y = inputs[idx], labels[idx]
            if flip is not None:
                x = random_flip(x, flip, rng)
            targets: torch.Tensor = y
            if mix is not None:
                x, targets = mix(x, y, gen)
            total += float(trainer.train_step(x, targets).mean())
            count += 1
        seconds.append(time.perf_counter() - t0)
        losses.append(total / max(count, 1))
    return {"epoch_seconds": seconds, "epoch_losses": losses, "updates": trainer.updates}
