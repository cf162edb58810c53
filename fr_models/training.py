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

__all__ = ["CALIBRATION_FACES", "MixFn", "calibration_subset", "channel_stats", "fit", "FlipDraw", "random_flip",
           "random_shift"]

#: Clean training faces over which batch-norm statistics are re-estimated after mixed training
#: (:meth:`fr_models.FRTrainer.recalibrate_norms`).
CALIBRATION_FACES = 1024

#: ``(inputs, labels, generator) -> (mixed inputs, soft labels)``.
MixFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def calibration_subset(n: int, seed: int, size: int = CALIBRATION_FACES) -> np.ndarray:
    """A fixed, seeded, sorted subset of ``min(n, size)`` indices into ``n`` training faces, for
    :meth:`fr_models.FRTrainer.recalibrate_norms`."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def channel_stats(x: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) standard deviation of ``(N, C, h, w)`` inputs, accumulated in float64 over
    chunks (no float32 copy of a float16-stored set is made): what :meth:`set_input_stats` of a backbone takes."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        xi = x[i : i + chunk].double()
        total += xi.sum(dim=(0, 2, 3))
        squares += (xi * xi).sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    var = (squares - n * mean * mean).clamp_min(0) / max(n - 1, 1)
    return mean.float(), var.sqrt().float()


def _mirrored(n: int, rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """Which of ``n`` items to mirror: one draw per item from ``rng``, each with probability 1/2."""
    return torch.from_numpy(rng.random(n) < 0.5).to(device)


def random_flip(x: torch.Tensor, flip: Callable[[torch.Tensor], torch.Tensor], rng: np.random.Generator) -> torch.Tensor:
    """Mirror each item of the batch ``x`` with probability 1/2 (one draw per item from ``rng``); ``x`` is left as
    it is (only the drawn items are mirrored, into a copy). For batches drawn from a stored set,
    :class:`FlipDraw` makes the same draws in one gather."""
    which = _mirrored(len(x), rng, x.device)
    out = x.clone()
    out[which] = flip(x[which])  # half the work of mirroring all and choosing (measured 0.53 vs 0.72 ms)
    return out


class FlipDraw:
    """Batches of stored faces, each mirrored with probability 1/2: ``FlipDraw(faces, flip)(idx, rng)`` equals
    ``random_flip(faces[idx].float(), flip, rng)`` bit for bit (the same draws from ``rng``), in one gather.

    The mirrors are made once, in the storage dtype (a mirror is a reordering and sign changes: exact in
    float16), so the set is held twice; the draw then costs a quarter of indexing, mirroring and writing back
    (``benchmarks/run.py`` section 1).

    :param faces: ``(N, ...)`` stored faces (any float dtype; batches come back as float32).
    :param flip: the exact mirror of a batch (e.g. :meth:`mixup_env.transform.FrequencyMasking.hflip`), or
        ``None`` for no mirroring (then no copy is made and ``rng`` is not drawn from).
    """

    def __init__(self, faces: torch.Tensor, flip: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.n = len(faces)
        self.mirrors = flip is not None
        self._faces = torch.cat([faces, flip(faces)]) if flip is not None else faces

    def __call__(self, idx: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The faces ``idx`` (an index tensor on the faces' device), mirrored by draws from ``rng``, as float32."""
        if self.mirrors:
            idx = idx + self.n * _mirrored(len(idx), rng, idx.device)
        return self._faces[idx].float()


def random_shift(x: torch.Tensor, max_shift: int, rng: np.random.Generator) -> torch.Tensor:
    """Shift each item of the batch ``x`` (``(N, C, h, w)``) by its own ``(dy, dx)``, drawn uniformly from
    ``-max_shift..max_shift``, zeros coming in. On block-DCT maps a shift by whole maps positions is exactly the DCT
    of the image shifted by whole 8x8 blocks (:func:`mixup_env.transform.block_shift`); on pixels it is a plain
    translation by pixels."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    if max_shift >= min(h, w):
        raise ValueError(f"max_shift={max_shift} is out of range for {h}x{w} maps: accepted 0..{min(h, w) - 1}")
    d = torch.from_numpy(rng.integers(-max_shift, max_shift + 1, size=(2, n))).to(x.device)
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    rows = (torch.arange(h, device=x.device) + max_shift).unsqueeze(0) - d[0].unsqueeze(1)  # (N, h)
    cols = (torch.arange(w, device=x.device) + max_shift).unsqueeze(0) - d[1].unsqueeze(1)  # (N, w)
    out = padded[torch.arange(n, device=x.device).view(n, 1, 1), :, rows.unsqueeze(2), cols.unsqueeze(1)]
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format)


def check_schedule(n: int, epochs: int, batch_size: int) -> None:
    """Refuse a training schedule that cannot run on ``n`` faces (``ValueError``, naming what is accepted)."""
    if epochs < 1 or batch_size < 1 or n < batch_size:
        raise ValueError(f"need epochs >= 1 and 1 <= batch_size <= {n} images, got epochs={epochs}, "
                         f"batch_size={batch_size}")


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
    max_shift: int = 0,
) -> dict[str, Any]:
    """Train for ``epochs`` passes over ``inputs`` in shuffled mini-batches (the last partial batch is dropped).

    The trainer's learning-rate schedule (:attr:`FRConfig.lr_schedule`) spans the updates of this call. The clean
    batch is augmented (mirrored, shifted) before it is mixed, so a mix is a mix of augmented faces.

    :param trainer: the FR model and optimiser.
    :param inputs: ``(N, ...)`` model inputs (pixels or masked frequency channels).
    :param labels: ``(N,)`` identities.
    :param epochs: passes over the data (>= 1).
    :param batch_size: faces per update.
    :param seed: seed of the order, the flips and the mixing.
    :param mix: turns a clean batch into a mixed one with soft labels (``None``: train on clean faces).
    :param flip: mirrors a batch; each face is mirrored with probability 1/2 (``None``: no mirroring).
    :param progress: show a progress bar over epochs.
    :param max_shift: shift each face by up to this many map positions in each direction (:func:`random_shift`;
        0: none).
    :return: ``epoch_seconds`` (training time per epoch), ``epoch_losses`` (mean loss per epoch), ``updates``.
    """
    check_schedule(len(inputs), epochs, batch_size)
    rng = np.random.default_rng(seed)
    draw = FlipDraw(inputs, flip)
    gen = torch.Generator(device=inputs.device).manual_seed(seed)
    trainer.total_updates = trainer.updates + epochs * (len(inputs) // batch_size)
    seconds, losses = [], []
    for _ in tqdm(range(epochs), desc="epochs", disable=not progress):
        t0 = time.perf_counter()
        order = torch.from_numpy(rng.permutation(len(inputs))).to(inputs.device)
        total, count = 0.0, 0
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            x, y = draw(idx, rng), labels[idx]  # inputs may be stored in float16
            x = random_shift(x, max_shift, rng)
            targets: torch.Tensor = y
            if mix is not None:
                x, targets = mix(x, y, gen)
            total += float(trainer.train_step(x, targets).mean())
            count += 1
        seconds.append(time.perf_counter() - t0)
        losses.append(total / max(count, 1))
    return {"epoch_seconds": seconds, "epoch_losses": losses, "updates": trainer.updates}
