"""What the attack networks (evaluator, VAE prior, black-box decoder, unmixer) share: the training schedule
(:class:`Schedule`), the update step, freezing, and loading their tagged checkpoints."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from fr_models.trainer import load_checkpoint

#: Fewest updates any of them gets: AT&T gives an attacker 120 public faces, i.e. 2 batches per epoch, and a
#: network trained for "60 epochs" of those would have seen 120 updates.
MIN_UPDATES = 600


@dataclass(frozen=True)
class Schedule:
    """How an attack network trains.

    :param epochs: passes over its data (at least ``min_updates`` updates).
    :param batch_size: items per update.
    :param lr: peak learning rate.
    :param seed: seed of the initialisation, the order and the random views.
    :param device: where to train.
    :param progress: show a progress bar.
    :param min_updates: fewest updates, however few the faces.
    """

    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    device: str | torch.device = "cpu"
    progress: bool = False
    min_updates: int = MIN_UPDATES

    def updates(self, n: int, batch_size: int | None = None) -> int:
        """How many updates on ``n`` items (:func:`total_updates`; ``batch_size``: the trainer's effective one)."""
        return total_updates(n, self.batch_size if batch_size is None else batch_size, self.epochs, self.min_updates)

    def batches(self, n: int, generator: torch.Generator, desc: str,
                batch_size: int | None = None) -> Iterator[torch.Tensor]:
        """:func:`minibatches` of ``n`` items under this schedule."""
        return minibatches(n, self.batch_size if batch_size is None else batch_size, self.epochs, generator, desc,
                           self.progress, self.min_updates)

    def adam(self, params: Any, n: int, batch_size: int | None = None) -> tuple[torch.optim.Optimizer, Any]:
        """Adam at :attr:`lr` with a cosine decay over :meth:`updates`."""
        opt = torch.optim.Adam(params, lr=self.lr)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.updates(n, batch_size))


def total_updates(n: int, batch_size: int, epochs: int, min_updates: int = MIN_UPDATES) -> int:
    """``epochs`` passes of ``n // batch_size`` updates, but at least ``min_updates``."""
    return max(int(epochs) * max(1, n // max(1, min(batch_size, n))), int(min_updates))


def minibatches(
    n: int, batch_size: int, epochs: int, generator: torch.Generator, desc: str, progress: bool = False,
    min_updates: int = MIN_UPDATES,
) -> Iterator[torch.Tensor]:
    """Index batches of shuffled passes over ``n`` items, :func:`total_updates` of them (the last partial batch of
    each pass is dropped), with a progress bar counted in updates."""
    bs = max(1, min(int(batch_size), n))
    total = total_updates(n, bs, epochs, min_updates)
    done = 0
    with tqdm(total=total, desc=desc, unit="update", disable=not progress) as bar:
        while done < total:
            order = torch.randperm(n, generator=generator)
            for i in range(0, n - bs + 1, bs):
                if done == total:
                    break
                yield order[i : i + bs]
                done += 1
                bar.update(1)


def update(opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, loss: torch.Tensor) -> None:
    """One optimiser update on ``loss`` and one scheduler step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients for the parameters: a trained attack network is a fixed function."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_tagged(path: str | os.PathLike[str], kind: str, what: str, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a checkpoint saved as a dict with ``"kind": kind``.

    :param what: how to name the expected file in errors (e.g. ``"evaluator checkpoint"``).
    :raises ValueError: the file is unreadable or of another kind.
    """
    state = load_checkpoint(path, what, device=device)
    if state.get("kind") != kind:
        raise ValueError(f"{str(path)!r} is not a {what} (its 'kind' is not {kind!r})")
    return state
