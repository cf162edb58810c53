"""Face-recognition backbones that read masked frequency channels (or pixels) and return L2-normalised embeddings.

The default, ``"resnet"`` (:class:`FaceResNet`), is a ResNet body of stride-2 stages with two stems: a pixel
stem (a 3x3 convolution at the image's resolution) and a frequency stem (a 1x1 convolution at the resolution
of the DCT maps) through which the maps enter the stage whose resolution they match, as in DCTNet (Xu et al.,
CVPR 2020: the ResNet stem removed, the DCT maps fed to the matching stage). With faces upsampled by ``f``
before the block DCT (:class:`mixup_env.FrequencyMasking`), the maps have ``f/8`` of the image's side: ``f = 8``
enters at the first stage (in place of the pixel stem), ``f = 4`` one stage later, and so on. Same body, same
embedding layer, so pixel and frequency models compare like for like.

Three smaller designs from earlier versions remain, chosen by name with :func:`make_backbone`:

* ``"grid"`` (:class:`FrequencyBackbone`): a small CNN directly on the ``(H/8) x (W/8)`` grid of blocks. Fast,
  but a face shifted by a few pixels changes every block's coefficients, so it generalises less well.
* ``"unblock"`` (:class:`UnblockBackbone`): a learned per-block inverse (a stride-8 transposed convolution, i.e.
  a learned partial inverse DCT from the kept channels only) back to the pixel grid, then a pixel CNN. More
  accurate, slower.

And ``"pixel"`` (:class:`PixelBackbone`), the undefended pixel-domain counterpart (its input is the image).

They are far weaker FR networks (LFW at 64x64: grid 0.25 top-1, unblock 0.33, pixel 0.55, measured in
``docs/benchmarks.md`` before ``"resnet"`` existed); ``python benchmarks/bench_fr.py`` measures the ResNet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BACKBONES", "NORMS", "STEMS", "FaceResNet", "FrequencyBackbone", "PixelBackbone", "UnblockBackbone",
           "make_backbone"]

#: Normalisation layers a backbone can be built with: ``"batch"`` (the default) or ``"group"`` (per-sample, what
#: DP-SGD needs: batch norm mixes the samples of a batch, so per-sample gradients and their clipping are undefined).
NORMS: tuple[str, ...] = ("batch", "group")

#: Input stems of :class:`FaceResNet`: ``"pixel"`` (images) or ``"frequency"`` (block-DCT maps).
STEMS: tuple[str, ...] = ("pixel", "frequency")

#: Bound on standardised input values: frequency channels are heavy-tailed (up to ~56 standard deviations).
INPUT_CLIP = 10.0


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
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
            conv_bn(in_channels, w1), conv_bn(w1, w1), conv_bn(w1, w2, stride=2), conv_bn(w2, w2)
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
            conv_bn(c, w1, 2), conv_bn(w1, w2, 2), conv_bn(w2, w2), conv_bn(w2, w3, 2), conv_bn(w3, w3)
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
            conv_bn(in_channels, w1, 2), conv_bn(w1, w2, 2), conv_bn(w2, w2), conv_bn(w2, w3, 2),
            conv_bn(w3, w3), conv_bn(w3, w4, 2),
        )
        self.embed = _embedding(w4 * (self.input_size[0] // 16) * (self.input_size[1] // 16), embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``(N, in_channels, H, W)`` images. :return: ``(N, embedding_dim)`` with unit L2 norm."""
        return F.normalize(self.embed(self.features(self.standardize(x))), dim=1)


class _ResidualBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm, the first with ``stride``; a 1x1 projection on
    the shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Identity() if cin == cout and stride == 1 else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class FaceResNet(_StandardizedInput):
    """A ResNet face body (``(N, C, h, w)`` in, ``(N, D)`` unit vectors out) with a pixel or a frequency stem.

    The body is ``len(widths)`` stages; stage ``i`` halves the resolution and has ``blocks[i]`` residual blocks of
    width ``widths[i]``. Its first stage starts at the *image* resolution ``R``: the pixel stem (3x3 convolution,
    ``in_channels -> widths[0]``) runs at ``R``. DCT maps of an image upsampled by ``f`` have resolution
    ``R * f / 8``; the frequency stem (1x1 convolution at that resolution, to the width the skipped stages would
    have produced) feeds them to stage ``log2(8 / f)``, the first stage whose input has their resolution. The
    embedding layer is IResNet's: batch norm, dropout, flatten, linear, batch norm (the final maps keep their
    layout, which carries where on the face a feature is).

    :param in_channels: image planes (pixel stem) or kept frequency channels (frequency stem).
    :param input_size: ``(h, w)`` of the input: the image for the pixel stem, the maps for the frequency stem.
    :param embedding_dim: size of the embedding.
    :param widths: width of each stage.
    :param blocks: residual blocks per stage (default: one each).
    :param stem: ``"pixel"`` or ``"frequency"`` (see :data:`STEMS`).
    :param upsample: for the frequency stem, the factor the faces were upsampled by before the DCT (1, 2, 4, 8).
    :param dropout: the embedding layer's dropout probability on the final maps (IResNet's; ``0``: none).
    :raises ValueError: a stem, factor, size or dropout the body cannot take; the message says what fits.
    """

    def __init__(
        self,
        in_channels: int,
        input_size: tuple[int, int],
        embedding_dim: int = 256,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] | None = None,
        stem: str = "frequency",
        upsample: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, input_size, embedding_dim)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} is invalid: accepted a probability 0 <= dropout < 1")
        widths = tuple(int(w) for w in widths)
        blocks = (1,) * len(widths) if blocks is None else tuple(int(b) for b in blocks)
        if not widths or min(widths) < 1 or len(blocks) != len(widths) or min(blocks) < 1:
            raise ValueError(f"the resnet backbone takes positive stage widths and as many positive block counts, got "
                             f"widths={list(widths)}, blocks={list(blocks)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; accepted: {', '.join(STEMS)}")
        if stem == "frequency" and (isinstance(upsample, bool) or upsample not in (1, 2, 4, 8)):
            raise ValueError(f"upsample={upsample!r}: the frequency stem takes maps of faces upsampled by 1, 2, 4 or 8")
        entry = 0 if stem == "pixel" else {8: 0, 4: 1, 2: 2, 1: 3}[int(upsample)]
        stages = len(widths)
        image = tuple(v << entry for v in self.input_size)  # the image resolution R
        if entry >= stages:
            raise ValueError(f"maps of faces upsampled by {upsample} skip {entry} stages, but the body has only "
                             f"{stages}: upsample by more (2, 4 or 8) or give more stage widths")
        if any(v % (1 << stages) for v in image):
            raise ValueError(f"a {stages}-stage body halves the resolution {stages} times: the image size "
                             f"{image[0]}x{image[1]} must be a multiple of {1 << stages} (e.g. 64 or 112)")
        self.stem_kind, self.upsample, self.entry = stem, int(upsample) if stem == "frequency" else None, entry
        width_in = widths[entry - 1] if entry > 0 else widths[0]
        k = 3 if stem == "pixel" else 1
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width_in, k, padding=k // 2, bias=False),
                                  nn.BatchNorm2d(width_in), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c = width_in
        for i in range(entry, stages):
            for j in range(blocks[i]):
                layers.append(_ResidualBlock(c, widths[i], 2 if j == 0 else 1))
                c = widths[i]
        self.features = nn.Sequential(*layers)
        final = (image[0] >> stages, image[1] >> stages)
        # the dropout module only when there is one, so models saved before it existed load unchanged
        self.embed = nn.Sequential(nn.BatchNorm2d(c), *([nn.Dropout(float(dropout))] if dropout else []), nn.Flatten(),
                                   nn.Linear(c * final[0] * final[1], embedding_dim, bias=False),
                                   nn.BatchNorm1d(embedding_dim))
        if min(widths) < 16:
            # oneDNN's channels-last convolution backward crashed the process (a double free) on a 1 -> 8 channel
            # pixel stem (torch 2.14.1, CPU); such narrow models are small anyway, so they keep the standard layout
            self.memory_format = torch.contiguous_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``(N, in_channels, h, w)``. :return: ``(N, embedding_dim)`` with unit L2 norm."""
        return F.normalize(self.embed(self.features(self.stem(self.standardize(x)))), dim=1)


BACKBONES: dict[str, type[_StandardizedInput]] = {
    "resnet": FaceResNet,
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
    norm: str = "batch", blocks: Sequence[int] | None = None, stem: str = "frequency", upsample: int = 1,
    dropout: float = 0.0,
) -> _StandardizedInput:
    """Build a backbone by name (one of :data:`BACKBONES`); ``widths=None`` takes its defaults; ``norm`` is one of
    :data:`NORMS`; ``blocks``, ``stem``, ``upsample`` and ``dropout`` are :class:`FaceResNet`'s (the other backbones take a
    frequency input without upsampling, or pixels for ``"pixel"``)."""
    try:
        cls = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}") from None
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; accepted: {', '.join(NORMS)}")
    args = (in_channels, input_size, embedding_dim) + (() if widths is None else (widths,))
    if cls is FaceResNet:
        net: _StandardizedInput = FaceResNet(*args, blocks=blocks, stem=stem, upsample=upsample,  # type: ignore[misc]
                                             dropout=dropout)
    else:
        if blocks is not None:
            raise ValueError(f"blocks={list(blocks)}: only the resnet backbone takes block counts")
        if dropout:
            raise ValueError(f"dropout={dropout}: only the resnet backbone takes an embedding dropout")
        net = cls(*args)
    if norm == "group":
        _group_norms(net)
        net.memory_format = torch.contiguous_format
    return net.to(memory_format=net.memory_format)
