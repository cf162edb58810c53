"""The training schedule shared by the attack networks (evaluator, VAE prior, black-box decoder, unmixer)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

#: Fewest updates any of them gets: AT&T gives an attacker 120 public faces, i.e. 2 batches per epoch, and a
#: network trained for "60 epochs" of those would have seen 120 updates.
MIN_UPDATES = 600


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
