"""Image similarity: PSNR and SSIM between batches of images in ``[0, 1]`` (torch, batched).

SSIM follows Wang et al. (2004): an 11x11 Gaussian window (sigma 1.5), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``
with ``L = 1``, the mean of the SSIM map over valid windows (no padding), averaged over colour planes.

Kept rather than taken from a library: it equals scikit-image's ``structural_similarity`` (``gaussian_weights``,
``use_sample_covariance=False``) to 1e-6 (``tests/test_attacks.py``) and is batched; ``benchmarks/similarity.py``
(``docs/similarity.md``) measured it 12x faster than scikit-image's per-image loop and 14x faster than
torchmetrics', whose border handling differs from the reference by 1e-2. PSNR is ``10 log10(1 / MSE)``.
"""

from __future__ import annotations

import torch

__all__ = ["psnr", "ssim"]


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two (N, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image, ``(N,)`` (peak 1; identical images give ``10*log10(1/eps)``)."""
    _check_pair(x, y)
    mse = (x.float() - y.float()).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse.clamp_min(eps))


def _gaussian_1d(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


def _band(g: torch.Tensor, size: int) -> torch.Tensor:
    """``(size - len(g) + 1, size)``: row ``i`` holds ``g`` at columns ``i .. i + len(g) - 1`` (a valid 1-D filter)."""
    out_len = size - len(g) + 1
    idx = torch.arange(out_len, device=g.device).view(-1, 1) + torch.arange(len(g), device=g.device).view(1, -1)
    return torch.zeros(out_len, size, device=g.device).scatter(1, idx, g.expand(out_len, -1).contiguous())


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image, ``(N,)``, in ``[-1, 1]`` (1 iff the images are equal).

    :param x: ``(N, C, H, W)`` in ``[0, 1]``.
    :param y: same shape.
    :param window: side of the Gaussian window (at most the image's smaller side).
    :param sigma: its standard deviation.
    """
    _check_pair(x, y)
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window}, got {tuple(x.shape[-2:])}")
    n, c = x.shape[:2]
    g = _gaussian_1d(window, sigma, x.device)
    rows, cols = _band(g, x.shape[-2]), _band(g, x.shape[-1])

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, "valid" windows, as two small matrix products
        return rows @ t @ cols.T

    a, b = x.float().reshape(n * c, *x.shape[-2:]), y.float().reshape(n * c, *y.shape[-2:])
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return smap.mean(dim=(1, 2)).view(n, c).mean(1)
