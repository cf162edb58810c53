"""Block-DCT frequency transform and channel masking (the PPFR-FD masking).

An image of ``H x W`` pixels is cut into ``8 x 8`` blocks; each block gets an orthonormal 2-D DCT-II, and the
coefficients of the same frequency ``(u, v)`` from all blocks are gathered into one channel. One colour plane
thus becomes 64 channels of ``(H/8) x (W/8)``; channel ``8*u + v`` holds frequency ``(u, v)`` (``u`` vertical,
``v`` horizontal). With ``C`` colour planes, the channel of plane ``c`` is ``64*c + 8*u + v``.

Masking drops a set of channels, by default the DC and low-frequency ones (``u + v <= 3``), which is exactly
PartialFace's list ``0, 1, 2, 3, 8, 9, 10, 16, 17, 24`` (Mi et al., ICCV 2023): they carry most of what a person
sees in a face, while the remaining channels still carry identity. (PPFR-FD, Wang et al., AAAI 2022, chose its
channels with an analysis network instead; this fixed list is PartialFace's.)

Two settings make the channels usable by a standard backbone (:class:`FrequencyMasking`):

* ``upsample``: the face is enlarged by a factor ``f`` in ``(1, 2, 4, 8)`` (bilinear) before the block DCT, so
  the channels are ``(f*H/8) x (f*W/8)`` maps instead of ``(H/8) x (W/8)``: DCTNet (Xu et al., CVPR 2020) and
  PartialFace (``f = 8``) do this so that the maps keep the resolution a ResNet stage expects.
* ``colour``: ``"grey"`` for one plane; for three planes ``"ycbcr"`` (PartialFace: the DCT of each YCbCr plane)
  or ``"rgb"`` (the DCT of each RGB plane).

Upsampling, the colour conversion, the DCT and the channel selection are all linear (the YCbCr offset is
affine, and convex weights sum to one), so mixing masked channels equals masking the mixed images.

Everything here is plain, batched torch: it runs on any device and is differentiable, so attacks can optimise
an image through the transform.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fr_models.card import ModelCard

__all__ = [
    "BLOCK",
    "CHANNELS_PER_PLANE",
    "PARTIALFACE_DROPPED",
    "COLOURS",
    "ChannelMask",
    "FrequencyMasking",
    "UPSAMPLE_FACTORS",
    "block_dct",
    "block_hflip",
    "block_idct",
    "block_shift",
    "dct_matrix",
    "hflip_sign",
    "model_card",
    "input_transform",
    "low_frequency_channels",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]

BLOCK = 8
CHANNELS_PER_PLANE = BLOCK * BLOCK
#: The channels PartialFace (Mi et al., ICCV 2023) drops from each colour plane: all (u, v) with u + v <= 3.
PARTIALFACE_DROPPED: tuple[int, ...] = (0, 1, 2, 3, 8, 9, 10, 16, 17, 24)
#: Upsampling factors accepted before the block DCT (the maps become ``f*H/8 x f*W/8``).
UPSAMPLE_FACTORS: tuple[int, ...] = (1, 2, 4, 8)
#: Colour settings: ``"grey"`` (one plane), ``"ycbcr"`` or ``"rgb"`` (three planes, transformed per plane).
COLOURS: tuple[str, ...] = ("grey", "ycbcr", "rgb")
#: ITU-R BT.601 full-range RGB -> YCbCr (the JPEG convention), rows Y, Cb, Cr; Cb and Cr are offset by 1/2.
_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def dct_matrix(n: int = BLOCK, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` (``n x n``): ``D @ x`` is ``scipy.fft.dct(x, norm="ortho")``.

    :param n: transform length.
    :param dtype: floating dtype of the result.
    :param device: device of the result.
    :return: the matrix, with ``D @ D.T == I``.
    """
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


def _kron_basis(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The 64x64 matrix ``K`` with ``K[8u+v, 8i+j] = D[u,i] * D[v,j]`` (2-D DCT of a flattened block)."""
    d = dct_matrix(BLOCK, torch.float64)
    return torch.kron(d, d).to(dtype=dtype, device=device)


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of images (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got dtype {x.dtype}; convert with x.float()")
    h, w = x.shape[-2:]
    if h % BLOCK or w % BLOCK or h == 0 or w == 0:
        raise ValueError(
            f"image size {h}x{w} is not a multiple of {BLOCK}: the block DCT needs height and width that are "
            f"positive multiples of {BLOCK} (e.g. 64x64 or 112x112); resize or crop the images first"
        )


def _block_transform(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Each 8x8 block of each plane, flattened, times ``basis.T`` (``(K, 64)``: K coefficients per block),
    gathered into channels: ``(N, C, H, W)`` -> ``(N, K*C, H/8, W/8)``, channel ``K*c + j`` = coefficient j of plane c.
    """
    _check_images(x)
    n, c, h, w = x.shape
    hb, wb = h // BLOCK, w // BLOCK
    blocks = x.reshape(n, c, hb, BLOCK, wb, BLOCK).permute(0, 1, 2, 4, 3, 5).reshape(n, c, hb, wb, CHANNELS_PER_PLANE)
    coeffs = blocks @ basis.T
    return coeffs.permute(0, 1, 4, 2, 3).reshape(n, c * basis.shape[0], hb, wb)


def block_dct(x: torch.Tensor) -> torch.Tensor:
    """8x8 block DCT-II (orthonormal) with same-frequency coefficients gathered into channels.

    :param x: images ``(N, C, H, W)``, floating point, ``H`` and ``W`` multiples of 8.
    :return: ``(N, 64*C, H/8, W/8)``; channel ``64*c + 8*u + v`` is frequency ``(u, v)`` of plane ``c``.
    """
    return _block_transform(x, _kron_basis(x.dtype, x.device))


def block_idct(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`block_dct`.

    :param y: frequency channels ``(N, 64*C, h, w)``.
    :return: images ``(N, C, 8*h, 8*w)``.
    """
    if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[1] % CHANNELS_PER_PLANE:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"expected frequency channels of shape (N, 64*C, h, w), got {shape}")
    n, cc, hb, wb = y.shape
    c = cc // CHANNELS_PER_PLANE
    coeffs = y.reshape(n, c, CHANNELS_PER_PLANE, hb, wb).permute(0, 1, 3, 4, 2)
    blocks = coeffs @ _kron_basis(y.dtype, y.device)
    blocks = blocks.reshape(n, c, hb, wb, BLOCK, BLOCK).permute(0, 1, 2, 4, 3, 5)
    return blocks.reshape(n, c, hb * BLOCK, wb * BLOCK)


def hflip_sign(planes: int = 1, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """``(64*planes,)`` signs ``(-1)**v`` of channel ``8u+v``: mirroring an 8x8 block left-right multiplies its
    DCT coefficient ``(u, v)`` by ``(-1)**v``."""
    v = torch.arange(CHANNELS_PER_PLANE) % BLOCK
    return (1.0 - 2.0 * (v % 2)).repeat(planes).to(dtype=dtype, device=device)


def block_hflip(y: torch.Tensor) -> torch.Tensor:
    """Horizontal flip in the block-DCT domain: exactly ``block_dct(flip(x))`` for ``y = block_dct(x)``.

    The order of the blocks in each row is reversed and coefficient ``(u, v)`` of every block is multiplied by
    ``(-1)**v``. Needs the full ``(N, 64*C, h, w)`` layout; for masked channels use :meth:`FrequencyMasking.hflip`.
    """
    if y.ndim != 4 or y.shape[1] % CHANNELS_PER_PLANE:
        raise ValueError(f"expected frequency channels of shape (N, 64*C, h, w), got {tuple(y.shape)}")
    sign = hflip_sign(y.shape[1] // CHANNELS_PER_PLANE, y.dtype, y.device)
    return y.flip(-1) * sign.view(1, -1, 1, 1)


def block_shift(y: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift frequency maps by whole blocks, zeros coming in: exactly ``block_dct`` of the image shifted by
    ``8*dy`` pixels down and ``8*dx`` pixels right (with zeros coming in), for any set of kept channels.

    :param y: ``(N, C, h, w)`` frequency channels (masked or not).
    :param dy: blocks down (negative: up), ``|dy| < h``.
    :param dx: blocks right (negative: left), ``|dx| < w``.
    """
    if y.ndim != 4:
        raise ValueError(f"expected frequency channels of shape (N, C, h, w), got {tuple(y.shape)}")
    h, w = y.shape[-2:]
    dy, dx = int(dy), int(dx)
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(f"shift ({dy}, {dx}) blocks is out of range for {h}x{w} maps: accepted |dy| < {h}, |dx| < {w}")
    out = torch.zeros_like(y)
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        y[..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return out


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB images ``(N, 3, H, W)`` in ``[0, 1]`` -> YCbCr (BT.601 full range, the JPEG convention; Cb, Cr
    centred on 1/2)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images of shape (N, 3, H, W), got {tuple(x.shape)}")
    m = torch.tensor(_YCBCR, dtype=x.dtype, device=x.device)
    offset = torch.tensor([0.0, 0.5, 0.5], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.einsum("ij,njhw->nihw", m, x) + offset


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`rgb_to_ycbcr`."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected YCbCr images of shape (N, 3, H, W), got {tuple(x.shape)}")
    m = torch.linalg.inv(torch.tensor(_YCBCR, dtype=torch.float64)).to(dtype=x.dtype, device=x.device)
    offset = torch.tensor([0.0, 0.5, 0.5], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.einsum("ij,njhw->nihw", m, x - offset)


def low_frequency_channels(max_order: int = 3) -> tuple[int, ...]:
    """Channels ``8*u + v`` of one colour plane with ``u + v <= max_order`` (``max_order=0``: DC only).

    :param max_order: the largest ``u + v`` counted as low frequency, in ``0..14``.
    :return: the sorted channel indices; for ``max_order=3`` this is :data:`PARTIALFACE_DROPPED`.
    """
    if not 0 <= int(max_order) <= 2 * (BLOCK - 1):
        raise ValueError(f"max_order={max_order} is out of range: accepted 0..{2 * (BLOCK - 1)}")
    return tuple(8 * u + v for u in range(BLOCK) for v in range(BLOCK) if u + v <= max_order)


class ChannelMask:
    """Which frequency channels of each colour plane are dropped, and the indices of those kept.

    :param dropped: channel indices in ``0..63`` dropped from every colour plane; default: the DC and
        low-frequency channels (:data:`PARTIALFACE_DROPPED`). An empty sequence keeps everything.
    :param planes: number of colour planes (1 for grayscale, 3 for colour).
    """

    def __init__(self, dropped: Iterable[int] | None = None, planes: int = 1) -> None:
        dropped = PARTIALFACE_DROPPED if dropped is None else tuple(int(i) for i in dropped)
        bad = [i for i in dropped if not 0 <= i < CHANNELS_PER_PLANE]
        if bad:
            raise ValueError(f"dropped channels {bad} are out of range: accepted indices 0..63 (8*u + v)")
        if int(planes) < 1:
            raise ValueError(f"planes={planes} is invalid: accepted a positive number of colour planes")
        self.dropped: tuple[int, ...] = tuple(sorted(set(dropped)))
        if len(self.dropped) == CHANNELS_PER_PLANE:
            raise ValueError("the mask drops all 64 channels: keep at least one")
        self.planes = int(planes)
        per_plane = [i for i in range(CHANNELS_PER_PLANE) if i not in self.dropped]
        #: indices into the (64*planes)-channel output of :func:`block_dct` that are kept, ascending
        self.kept: tuple[int, ...] = tuple(CHANNELS_PER_PLANE * p + i for p in range(self.planes) for i in per_plane)

    @property
    def num_kept(self) -> int:
        """Number of channels after masking (over all colour planes)."""
        return len(self.kept)

    def __repr__(self) -> str:
        return f"ChannelMask(dropped={list(self.dropped)}, planes={self.planes})"


class FrequencyMasking(nn.Module):
    """Images -> masked frequency channels: colour conversion, ``upsample``, :func:`block_dct`, then keep
    :attr:`ChannelMask.kept`.

    :param mask: the channel mask; default ``ChannelMask()`` (DC and low frequencies dropped, grayscale).
    :param upsample: enlarge the images by this factor (bilinear, ``align_corners=False``) before the DCT, one of
        :data:`UPSAMPLE_FACTORS`; ``H x W`` images give ``(f*H/8) x (f*W/8)`` maps, so ``f*H`` and ``f*W`` must be
        multiples of 8.
    :param colour: one of :data:`COLOURS`; default ``"grey"`` for a one-plane mask, ``"ycbcr"`` for three planes,
        ``"rgb"`` (the planes as given, transformed one by one) for any other number.
    :raises ValueError: an upsampling factor, colour setting or number of planes that does not fit.
    """

    kept_index: torch.Tensor
    basis: torch.Tensor
    basis_rows: torch.Tensor

    def __init__(self, mask: ChannelMask | None = None, upsample: int = 1, colour: str | None = None) -> None:
        super().__init__()
        self.mask = mask if mask is not None else ChannelMask()
        if isinstance(upsample, bool) or upsample not in UPSAMPLE_FACTORS:
            raise ValueError(f"upsample={upsample!r} is not supported: accepted factors {list(UPSAMPLE_FACTORS)}")
        self.upsample = int(upsample)
        planes = self.mask.planes
        if colour is None:
            colour = {1: "grey", 3: "ycbcr"}.get(planes, "rgb")
        if colour not in COLOURS:
            raise ValueError(f"unknown colour setting {colour!r}; accepted: {', '.join(COLOURS)}")
        if (colour == "grey") != (planes == 1) or (colour == "ycbcr" and planes != 3):
            want = {"grey": "1 colour plane", "ycbcr": "3 colour planes", "rgb": "2 or more colour planes"}[colour]
            raise ValueError(f"colour={colour!r} needs {want}, the mask has {planes}: use colour='grey' for grey "
                             "faces, 'ycbcr' or 'rgb' for colour ones")
        self.colour = colour
        self.register_buffer("kept_index", torch.tensor(self.mask.kept, dtype=torch.long), persistent=False)
        # Only the kept rows of the DCT basis: the dropped coefficients are never computed.
        rows = torch.tensor([i for i in range(CHANNELS_PER_PLANE) if i not in self.mask.dropped], dtype=torch.long)
        self.register_buffer("basis_rows", rows, persistent=False)
        self.register_buffer("basis", _kron_basis(torch.float32, torch.device("cpu"))[rows], persistent=False)

    @property
    def out_channels(self) -> int:
        """Channels of the masked output."""
        return self.mask.num_kept

    def output_size(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of the maps for faces of ``image_size``.

        :raises ValueError: ``upsample * side`` is not a positive multiple of 8 (the message names what fits).
        """
        hw = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(v) for v in image_size)
        f = self.upsample
        if len(hw) != 2 or min(hw) < 1 or any((f * v) % BLOCK for v in hw):
            step = BLOCK // math.gcd(BLOCK, f)
            raise ValueError(f"image size {'x'.join(map(str, hw))} with upsample={f} does not fill whole 8x8 blocks: "
                             f"accepted sides that are positive multiples of {step} (upsample x side a multiple of 8)")
        return hw[0] * f // BLOCK, hw[1] * f // BLOCK

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The image the DCT sees: colour conversion, then upsampling (checked, like :meth:`forward`)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"expected images of shape (N, C, H, W), got {shape}")
        if images.shape[1] != self.mask.planes:
            raise ValueError(f"images have {images.shape[1]} colour planes, the transform (colour={self.colour!r}) "
                             f"expects {self.mask.planes}: grey faces need colour='grey', colour faces 'ycbcr' or "
                             "'rgb'")
        if not images.is_floating_point():
            raise TypeError(f"expected a floating-point tensor, got dtype {images.dtype}; convert with x.float()")
        self.output_size(tuple(images.shape[-2:]))
        if self.colour == "ycbcr":
            images = rgb_to_ycbcr(images)
        if self.upsample > 1:
            images = F.interpolate(images, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """:param images: ``(N, C, H, W)`` floating point, ``C`` = the mask's planes.
        :return: ``(N, num_kept, f*H/8, f*W/8)``."""
        images = self.prepare(images)
        basis = self.basis
        if basis.dtype != images.dtype or basis.device != images.device:  # e.g. float64 images
            basis = _kron_basis(images.dtype, images.device).index_select(0, self.basis_rows.to(images.device))
        return _block_transform(images, basis)

    def hflip(self, masked: torch.Tensor) -> torch.Tensor:
        """Horizontal flip of masked channels, exact (see :func:`block_hflip`; upsampling commutes with mirroring)."""
        sign = hflip_sign(self.mask.planes, masked.dtype, masked.device).index_select(0, self.kept_index.to(masked.device))
        return masked.flip(-1) * sign.view(1, -1, 1, 1)

    def expand(self, masked: torch.Tensor) -> torch.Tensor:
        """Put masked channels back in their places of the full 64*C layout, zeros where dropped."""
        n, _, h, w = masked.shape
        full = masked.new_zeros(n, CHANNELS_PER_PLANE * self.mask.planes, h, w)
        return full.index_copy(1, self.kept_index.to(masked.device), masked)

    def to_image(self, masked: torch.Tensor) -> torch.Tensor:
        """What survives of the image after masking: inverse DCT with dropped channels set to zero, averaged back
        to the original resolution (``f x f`` area means), in the colour space the DCT saw (Y, Cb, Cr planes for
        ``colour="ycbcr"``, with the dropped DC the planes are centred on 0)."""
        img = block_idct(self.expand(masked))
        return F.avg_pool2d(img, self.upsample) if self.upsample > 1 else img


def model_card(masking: FrequencyMasking | None, image_size: int | tuple[int, int] | None, **fields: Any) -> ModelCard:
    """The :class:`~fr_models.card.ModelCard` of a model behind ``masking`` (``FRTrainer.card``).

    :param masking: the frequency masking in front of the model, or ``None`` for a pixel-domain model.
    :param image_size: the size faces were resized to (``None``: their native size).
    :param fields: the card's other fields (``class_names``, ``defence``, ``k``, ...).
    """
    size = None if image_size is None else ((int(image_size),) * 2 if isinstance(image_size, int) else tuple(image_size))
    if masking is None:
        return ModelCard(input="pixel", image_size=size, **fields)
    return ModelCard(input="masked_dct", dropped_channels=tuple(masking.mask.dropped), planes=masking.mask.planes,
                     upsample=masking.upsample, colour=masking.colour, image_size=size, **fields)


def input_transform(card: ModelCard) -> nn.Module:
    """The differentiable image -> model-input transform that ``card`` describes (an identity module for pixel
    models): what a white-box attacker backpropagates through."""
    if card.input == "pixel":
        return nn.Identity()
    # models saved before colour existed: grey for one plane, RGB for three
    colour = card.colour if card.colour is not None else ("grey" if card.planes == 1 else "rgb")
    return FrequencyMasking(ChannelMask(card.dropped_channels, card.planes), card.upsample, colour)
