"""Random, differentiable image augmentations shared by the attacks and the evaluation classifier.

One function, :func:`random_augment`: a per-image random affine warp (shift, scale, small rotation, mirror) and a
brightness/contrast change, all in one batched :func:`torch.nn.functional.grid_sample`, so it is cheap and
gradients flow through it. The white-box attacks average their objective over such views (an image that only
fools the target at one exact pixel alignment is an adversarial pattern, not a face); the evaluator and the
attack decoders train on such views of their few faces.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_augment"]


def random_augment(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    shift: float = 0.06,
    scale: float = 0.08,
    rotate_deg: float = 5.0,
    flip: bool = True,
    brightness: float = 0.1,
    contrast: float = 0.1,
) -> torch.Tensor:
    """Random views of a batch, one draw per image.

    :param images: ``(N, C, H, W)`` in ``[0, 1]``.
    :param generator: source of randomness (``None``: torch's global generator).
    :param shift: largest translation, as a fraction of the side (0.06 of 64 pixels = about 4 pixels).
    :param scale: largest relative zoom in or out.
    :param rotate_deg: largest rotation in degrees.
    :param flip: mirror left-right with probability 1/2.
    :param brightness: largest additive brightness change.
    :param contrast: largest relative contrast change (around each image's mean).
    :return: ``(N, C, H, W)``, clamped to ``[0, 1]``; differentiable in ``images``.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
    n, dev, dt = images.shape[0], images.device, images.dtype

    def uniform(width: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=dev, dtype=dt) * 2.0 - 1.0) * width

    theta = uniform(rotate_deg * math.pi / 180.0)
    zoom = 1.0 + uniform(scale)
    mirror = torch.ones(n, device=dev, dtype=dt)
    if flip:
        mirror = torch.where(torch.rand(n, generator=generator, device=dev) < 0.5, -mirror, mirror)
    cos, sin = torch.cos(theta) / zoom, torch.sin(theta) / zoom
    affine = torch.stack([
        torch.stack([cos * mirror, -sin, uniform(2 * shift)], 1),
        torch.stack([sin * mirror, cos, uniform(2 * shift)], 1),
    ], 1)
    grid = F.affine_grid(affine, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * (1.0 + uniform(contrast)).view(n, 1, 1, 1) + mean + uniform(brightness).view(n, 1, 1, 1)
    return out.clamp(0.0, 1.0)
