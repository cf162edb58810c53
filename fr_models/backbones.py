"""Face-recognition backbones that read masked frequency channels and return L2-normalised embeddings.

Two designs, chosen by name with :func:`make_backbone`:

* ``"grid"`` (:class:`FrequencyBackbone`): a small CNN directly on the ``(H/8) x (W/8)`` grid of blocks. Fast,
  but a face shifted by a few pixels changes every block's coefficients, so it generalises less well.
* ``"unblock"`` (:class:`UnblockBackbone`): a learned per-block inverse (a stride-8 transposed convolution, i.e.
  a learned partial inverse DCT from the kept channels only) back to the pixel grid, then a pixel CNN. More
  accurate, slower.

And ``"pixel"`` (:class:`PixelBackbone`), the undefended pixel-domain counterpart (its input is the image).

``python benchmarks/bench_fr.py`` measures all three (top-1, seconds per epoch, LFW verification); its figures
are in ``docs/benchmarks.md`` (LFW at 64x64: grid 0.25 top-1 at 0.62 s/epoch, unblock 0.33 at 2.89 s, pixel 0.55
at 1.98 s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BACKBONES", "NORMS", "FrequencyBackbone", "PixelBackbone", "UnblockBackbone", "make_backbone"]

#: Normalisation layers a backbone can be built with: ``"batch"`` (the default) or ``"group"`` (per-sample, what
#: DP-SGD needs: batch norm mixes the samples of a batch, so per-sample gradients and their clipping are undefined).
NORMS: tuple[str, ...] = ("batch", "group")

#: Bound on standardised input values: frequency channels are heavy-tailed (up to ~56 standard deviations).
INPUT_CLIP = 10.0


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _embedding(features: int, embedding_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(features, embedding_dim, bias=False), nn.BatchNorm1d(embedding_dim))


class _StandardizedInput(nn.Module):
    """Shared input handling: shape check, per-channel standardisation (stored buffers) and clipping (the
    frequency channels are heavy-tailed; pixels are unaffected by the clip).

    The standardisation is affine and per channel, so mixing before or after it gives the same input.
    """

    in_mean: torch.Tensor
    in_std: torch.Tensor

    def __init__(self, in_channels: int, input_size: tuple[int, int], embedding_dim: int) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.embedding_dim = int(embedding_dim)
        #: channels-last by default; group-norm models keep the standard layout (Opacus's per-sample convolution
        #: gradients are wrong on channels-last tensors: a test compares them with autograd's)
        self.memory_format = torch.channels_last
        self.register_buffer("in_mean", torch.zeros(in_channels))
        self.register_buffer("in_std", torch.ones(in_channels))

    @torch.no_grad()
    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-channel standardisation, e.g. from the training set's frequency channels.

        :param mean: ``(in_channels,)`` channel means.
        :param std: ``(in_channels,)`` channel standard deviations (floored at 1e-6).
        """
        self.in_mean.copy_(mean.reshape(-1))
        self.in_std.copy_(std.reshape(-1).clamp_min(1e-6))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Check the shape, standardise per channel, clip to ``[-INPUT_CLIP, INPUT_CLIP]``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"expected input (N, {self.in_channels}, {self.input_size[0]}, {self.input_size[1]}), "
                f"got {tuple(x.shape)}"
            )
        x = (x - self.in_mean.view(1, -1, 1, 1)) / self.in_std.view(1, -1, 1, 1)
        # channels-last: oneDNN's convolutions run faster on it (measured by benchmarks/run.py, section 2)
        return x.clamp(-INPUT_CLIP, INPUT_CLIP).contiguous(memory_format=self.memory_format)


class FrequencyBackbone(_StandardizedInput):
    """A small CNN on the grid of blocks (``(N, C, H/8, W/8)`` in, ``(N, D)`` unit vectors out).

    :param in_channels: number of frequency channels (after masking).
    :param input_size: spatial size ``(h, w)`` of the channels (image size / 8).
    :param embedding_dim: size of the embedding.
    :param widths: channels of the two stages (the second halves the spatial size).
    """

    def __init__(
        self, in_channels: int, input_size: tuple[int, int], embedding_dim: int = 128, widths: Sequence[int] = (32, 64)
    ) -> None:
        super().__init__(in_channels, input_size, embedding_dim)
        if len(widths) != 2:
            raise ValueError(f"the grid backbone takes 2 stage widths, got widths={list(widths)}")
        w1, w2 = int(widths[0]), int(widths[1])
        self.features = nn.Sequential(
            _conv_bn(in_channels, w1), _conv_bn(w1, w1), _conv_bn(w1, w2, stride=2), _conv_bn(w2, w2)
        )
        h, w = (self.input_size[0] + 1) // 2, (self.input_size[1] + 1) // 2
        self.embed = _embedding(w2 * h * w, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``(N, in_channels, h, w)``. :return: ``(N, embedding_dim)`` with unit L2 norm."""
        return F.normalize(self.embed(self.features(self.standardize(x))), dim=1)


class UnblockBackbone(_StandardizedInput):
    """Learned per-block inverse to the pixel grid, then a pixel CNN.

    :param in_channels: number of frequency channels (after masking).
    :param input_size: spatial size ``(h, w)`` of the channels (image size / 8).
    :param embedding_dim: size of the embedding.
    :param widths: ``(c, w1, w2, w3)``: maps produced per pixel by the learned inverse, then the widths of three
        stride-2 stages.
    """

    def __init__(
        self,
        in_channels: int,
        input_size: tuple[int, int],
        embedding_dim: int = 128,
        widths: Sequence[int] = (8, 16, 32, 64),
    ) -> None:
        super().__init__(in_channels, input_size, embedding_dim)
        if len(widths) != 4:
            raise ValueError(f"the unblock backbone takes 4 widths (c, w1, w2, w3), got widths={list(widths)}")
        c, w1, w2, w3 = (int(w) for w in widths)
        self.unblock = nn.Sequential(
            nn.ConvTranspose2d(in_channels, c, 8, stride=8, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
        )
        self.features = nn.Sequential(
            _conv_bn(c, w1, 2), _conv_bn(w1, w2, 2), _conv_bn(w2, w2), _conv_bn(w2, w3, 2), _conv_bn(w3, w3)
        )
        self.embed = _embedding(w3 * self.input_size[0] * self.input_size[1], embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``(N, in_channels, h, w)``. :return: ``(N, embedding_dim)`` with unit L2 norm."""
        return F.normalize(self.embed(self.features(self.unblock(self.standardize(x)))), dim=1)


class PixelBackbone(_StandardizedInput):
    """The pixel-domain counterpart: a 4-stage CNN on the images themselves (``(N, C, H, W)`` in), for the
    undefended baseline. With the default widths it has a capacity comparable to :class:`UnblockBackbone`.

    :param in_channels: colour planes (1 for grayscale).
    :param input_size: ``(H, W)`` of the images (multiples of 16).
    :param embedding_dim: size of the embedding.
    :param widths: the widths of four stride-2 stages.
    """

    def __init__(
        self,
        in_channels: int,
        input_size: tuple[int, int],
        embedding_dim: int = 128,
        widths: Sequence[int] = (16, 32, 64, 64),
    ) -> None:
        super().__init__(in_channels, input_size, embedding_dim)
        if len(widths) != 4:
            raise ValueError(f"the pixel backbone takes 4 stage widths, got widths={list(widths)}")
        if self.input_size[0] % 16 or self.input_size[1] % 16:
            raise ValueError(f"the pixel backbone needs image sides that are multiples of 16, got {self.input_size}")
        w1, w2, w3, w4 = (int(w) for w in widths)
        self.features = nn.Sequential(
            _conv_bn(in_channels, w1, 2), _conv_bn(w1, w2, 2), _conv_bn(w2, w2), _conv_bn(w2, w3, 2),
            _conv_bn(w3, w3), _conv_bn(w3, w4, 2),
        )
        self.embed = _embedding(w4 * (self.input_size[0] // 16) * (self.input_size[1] // 16), embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``(N, in_channels, H, W)`` images. :return: ``(N, embedding_dim)`` with unit L2 norm."""
        return F.normalize(self.embed(self.features(self.standardize(x))), dim=1)


BACKBONES: dict[str, type[_StandardizedInput]] = {
    "grid": FrequencyBackbone,
    "unblock": UnblockBackbone,
    "pixel": PixelBackbone,
}


def _group_norms(module: nn.Module) -> None:
    """Replace every batch norm inside ``module`` by a group norm over the same channels (in place): groups of
    up to 8 channels for feature maps, one group (a layer norm) for the embedding. ReLUs stop working in place
    (Opacus's per-sample gradient hooks forbid it)."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            child.inplace = False
        elif isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(math.gcd(8, child.num_features), child.num_features))
        elif isinstance(child, nn.BatchNorm1d):
            setattr(module, name, nn.GroupNorm(1, child.num_features))
        else:
            _group_norms(child)


def make_backbone(
    name: str, in_channels: int, input_size: tuple[int, int], embedding_dim: int, widths: Sequence[int] | None = None,
    norm: str = "batch",
) -> _StandardizedInput:
    """Build a backbone by name (``"grid"``, ``"unblock"`` or ``"pixel"``); ``widths=None`` takes its defaults;
    ``norm`` is one of :data:`NORMS`."""
    try:
        cls = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}") from None
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; accepted: {', '.join(NORMS)}")
    args = (in_channels, input_size, embedding_dim) + (() if widths is None else (widths,))
    net = cls(*args)
    if norm == "group":
        _group_norms(net)
        net.memory_format = torch.contiguous_format
    return net.to(memory_format=net.memory_format)
