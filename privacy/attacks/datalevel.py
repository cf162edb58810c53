"""Data-level attack: recover private faces from the mixed, masked training inputs a server would see.

Threat model: the attacker sees the *inputs* of training (each one a Dirichlet-weighted sum of ``k`` masked
frequency images of private faces), knows the scheme (the transform, ``k`` and the weight distribution, as
Kerckhoffs' principle demands) and holds public faces. In the spirit of Carlini et al.'s attack on InstaHide, it
learns to undo the scheme: it simulates the same mixing on public faces and trains a network from each mixed input
to the face with the largest weight in it (the one a mix reveals most of). Applied to the observed private mixes,
the network's output is judged against that dominant face's identity. With ``k = 1`` this is the attack on masking
alone (recovering a face from its high-frequency channels); a larger ``k`` costs the attacker more, and this
attack measures by how much rather than assuming it.

The mixing is a function, ``mix(inputs, generator) -> (mixed, partners, weights)`` with ``partners`` and ``weights``
``(n, k_max)`` (row ``i`` mixes ``inputs[partners[i]]`` with ``weights[i]``): :func:`defence_mix` builds the
defence's own from :func:`mixup_env.mixing.mix_inputs`, the function the defence mixes with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fr_models.backbones import INPUT_CLIP, conv_bn
from fr_models.trainer import seeded
from mixup_env.mixing import mix_inputs
from privacy.attacks._loop import Schedule, freeze, update
from privacy.attacks.augment import random_augment
from privacy.attacks.whitebox import InversionResult

__all__ = ["MixFunction", "Unmixer", "defence_mix", "observe_mixes", "train_unmixer", "training_mixes", "unmix"]

#: ``(inputs, generator) -> (mixed inputs, partners (n, k_max), weights (n, k_max))``
MixFunction = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def defence_mix(k_values: Sequence[int], weights: Sequence[float] | None = None, alpha: float = 1.0,
                max_weight: float | None = None) -> MixFunction:
    """The defence's mixing as a :data:`MixFunction`: per input, k drawn from ``k_values`` with probabilities
    proportional to ``weights`` (``None``: uniform; k is capped at the batch size), Dirichlet(``alpha``) weights,
    each capped at ``max_weight`` (``None``: uncapped; :func:`mixup_env.mixing.cap_weights`).

    :raises ValueError: not one non-negative weight per k, or all of them 0.
    """
    ks = torch.tensor([int(k) for k in k_values])
    p = torch.ones(len(ks)) if weights is None else torch.tensor([float(w) for w in weights])
    if len(ks) == 0 or len(p) != len(ks) or not bool((p >= 0).all()) or float(p.sum()) <= 0:
        raise ValueError(f"need one non-negative weight per k, not all 0, got {weights} for k {list(k_values)}")

    def mix(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # drawn on the generator's device (observe_mixes and train_unmixer give one on the faces' device)
        pick = (torch.randint(len(ks), (len(x),), generator=gen, device=gen.device) if weights is None
                else torch.multinomial(p.to(gen.device), len(x), replacement=True, generator=gen))
        return mix_inputs(x, ks.to(gen.device)[pick].clamp(max=len(x)), alpha, gen, max_weight)

    return mix


class Unmixer(nn.Module):
    """Masked (mixed) frequency channels ``(n, K, H/8, W/8)`` -> the dominant face ``(n, C, H, W)`` in ``[0, 1]``:
    two conv layers on the block grid, a learned stride-8 inverse to the pixel grid, two pixel conv layers.

    :param in_channels: kept frequency channels.
    :param out_channels: colour planes of the face.
    :param block: image pixels per map position (8 for the 8x8 DCT, ``8 / f`` for faces upsampled by ``f``).
    :param width: channels on the block grid.
    """

    in_mean: torch.Tensor
    in_std: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int, block: int = 8, width: int = 128) -> None:
        super().__init__()
        self.register_buffer("in_mean", torch.zeros(in_channels))
        self.register_buffer("in_std", torch.ones(in_channels))
        self.grid = nn.Sequential(conv_bn(in_channels, width), conv_bn(width, width))
        self.up = nn.ConvTranspose2d(width, 16, block, stride=block)
        self.pixel = nn.Sequential(conv_bn(16, 16), conv_bn(16, 16), nn.Conv2d(16, out_channels, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x - self.in_mean.view(1, -1, 1, 1)) / self.in_std.view(1, -1, 1, 1)).clamp(-INPUT_CLIP, INPUT_CLIP)
        return torch.sigmoid(self.pixel(self.up(self.grid(x))))


def training_mixes(
    images: torch.Tensor, transform: nn.Module, mix: MixFunction, batch_size: int = 64, rounds: int = 1, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """What a server sees in training, a batch at a time: the images in shuffled batches, transformed and mixed
    (the same ``seed`` gives the same batches). Yields ``(mixed, dominant, weight)`` per batch, as
    :func:`observe_mixes` returns them."""
    gen = torch.Generator(device=images.device).manual_seed(seed)
    with torch.no_grad():
        for _ in range(rounds):
            order = torch.randperm(len(images), generator=gen, device=images.device)
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                if len(idx) < 2:
                    continue
                mixed, partners, weights = mix(transform(images[idx]), gen)
                top = weights.argmax(1, keepdim=True)
                yield mixed, idx[partners.gather(1, top).squeeze(1)], weights.gather(1, top).squeeze(1)


def observe_mixes(
    images: torch.Tensor, transform: nn.Module, mix: MixFunction, batch_size: int = 64, rounds: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a server sees in training: the images in shuffled batches, transformed and mixed.

    :param images: ``(N, C, H, W)`` faces in ``[0, 1]``.
    :param transform: image -> masked frequency channels.
    :param mix: the mixing scheme.
    :param batch_size: faces per batch (partners come from the same batch).
    :param rounds: passes over the faces (each face is the first component of one mix per pass).
    :param seed: seed of the order and the mixing.
    :return: ``(observed, dominant, weight)``: the mixed inputs, the index (into ``images``) of each one's
        largest-weight face, and that weight.
    """
    parts = list(training_mixes(images, transform, mix, batch_size, rounds, seed))
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def train_unmixer(
    public_images: torch.Tensor,
    transform: nn.Module,
    mix: MixFunction,
    schedule: Schedule = Schedule(60),
) -> Unmixer:
    """Train an :class:`Unmixer` on fresh simulated mixes of random views of the public faces.

    :param public_images: ``(N, C, H, W)`` public faces in ``[0, 1]``.
    :param transform: the defence's image -> masked channels transform.
    :param mix: the defence's mixing scheme (the same ``k`` and weights as the defended training).
    :param schedule: epochs, batch size, learning rate, seed, device, progress and fewest updates
        (:class:`~privacy.attacks._loop.Schedule`; at least ``min_updates`` updates).
    """
    if public_images.ndim != 4 or len(public_images) < 2:
        raise ValueError(f"need at least 2 public faces (N, C, H, W), got {tuple(public_images.shape)}")
    x = public_images.to(schedule.device)
    transform = transform.to(schedule.device)
    gen = torch.Generator(device=x.device).manual_seed(schedule.seed)
    with torch.no_grad():
        probe = transform(x[: min(len(x), 512)])
    with seeded(schedule.seed):
        # image pixels per map position: 8 without upsampling, 8 / f for faces upsampled by f before the DCT
        block = max(1, x.shape[-1] // probe.shape[-1])
        net = Unmixer(probe.shape[1], x.shape[1], block=block).to(schedule.device)
    net.in_mean.copy_(probe.mean(dim=(0, 2, 3)))
    net.in_std.copy_(probe.std(dim=(0, 2, 3)).clamp_min(1e-6))
    bs = max(2, min(int(schedule.batch_size), len(x)))  # a mix needs two faces
    opt, sched = schedule.adam(net.parameters(), len(x), bs)
    net.train()
    for idx in schedule.batches(len(x), torch.Generator().manual_seed(schedule.seed), "data-level unmixer", bs):
        faces = random_augment(x[idx.to(x.device)], gen, rotate_deg=3.0)
        with torch.no_grad():
            mixed, partners, weights = mix(transform(faces), gen)
            dominant = faces[partners.gather(1, weights.argmax(1, keepdim=True)).squeeze(1)]
        update(opt, sched, F.mse_loss(net(mixed), dominant))
    return freeze(net)  # type: ignore[return-value]


@torch.no_grad()
def unmix(unmixer: Unmixer, observed: torch.Tensor, classes: torch.Tensor, batch_size: int = 256) -> InversionResult:
    """Apply a trained unmixer to observed mixes.

    :param unmixer: from :func:`train_unmixer`.
    :param observed: ``(M, K, h, w)`` observed mixed inputs.
    :param classes: ``(M,)`` the identity of each mix's dominant face (for judging; the attack does not use it).
    """
    t0 = time.perf_counter()
    dev = next(unmixer.parameters()).device
    out = torch.cat([unmixer(observed[i : i + batch_size].to(dev)).cpu() for i in range(0, len(observed), batch_size)])
    cls = torch.as_tensor(classes, dtype=torch.long).cpu()
    return InversionResult(out, cls, torch.full((len(cls),), float("nan")), time.perf_counter() - t0,
                           {"decoded": "dominant face of each mix"})
