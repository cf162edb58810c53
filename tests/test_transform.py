import numpy as np
import pytest
import scipy.fft
import torch

from mixup_env.transform import (
    PARTIALFACE_DROPPED,
    ChannelMask,
    FrequencyMasking,
    block_dct,
    block_idct,
    dct_matrix,
    low_frequency_channels,
)


def reference_block_dct(x: np.ndarray) -> np.ndarray:
    """Per-block scipy DCT, gathered by frequency: (N, C, H, W) -> (N, 64C, H/8, W/8)."""
    n, c, h, w = x.shape
    out = np.zeros((n, 64 * c, h // 8, w // 8))
    for i in range(n):
        for p in range(c):
            for bi in range(h // 8):
                for bj in range(w // 8):
                    coef = scipy.fft.dctn(x[i, p, 8 * bi : 8 * bi + 8, 8 * bj : 8 * bj + 8], norm="ortho")
                    out[i, 64 * p : 64 * p + 64, bi, bj] = coef.reshape(64)  # index 8u + v
    return out


@pytest.mark.parametrize("shape", [(2, 1, 16, 24), (1, 3, 8, 8), (3, 2, 24, 16)])
def test_block_dct_matches_scipy(shape):
    rng = np.random.default_rng(0)
    x = rng.random(shape).astype(np.float32)
    got = block_dct(torch.from_numpy(x)).numpy()
    assert got.shape == (shape[0], 64 * shape[1], shape[2] // 8, shape[3] // 8)
    assert np.abs(got - reference_block_dct(x.astype(np.float64))).max() <= 1e-5


def test_channel_index_is_8u_plus_v():
    # A block equal to the (u, v) = (2, 5) basis function has all its energy in channel 8*2 + 5.
    d = dct_matrix(8, torch.float64)
    block = torch.outer(d[2], d[5])
    y = block_dct(block.reshape(1, 1, 8, 8))
    assert y.shape == (1, 64, 1, 1)
    assert torch.allclose(y.flatten(), torch.nn.functional.one_hot(torch.tensor(21), 64).double(), atol=1e-12)


def test_round_trip_is_exact_and_orthonormal():
    x = torch.rand(4, 3, 32, 40, dtype=torch.float64)
    y = block_dct(x)
    assert torch.allclose(block_idct(y), x, atol=1e-12)
    assert torch.allclose((y**2).sum(), (x**2).sum())  # Parseval: orthonormal
    x32 = x.float()
    assert (block_idct(block_dct(x32)) - x32).abs().max() < 1e-5


def test_transform_is_differentiable():
    x = torch.rand(1, 1, 8, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: block_dct(t).pow(2).sum(1), (x,))
    masked = FrequencyMasking()(x.float())
    masked.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_non_multiple_of_8_is_rejected():
    with pytest.raises(ValueError, match=r"112x92 is not a multiple of 8.*multiples of 8"):
        block_dct(torch.zeros(1, 1, 112, 92))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        block_dct(torch.zeros(8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        block_dct(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


def test_default_mask_is_partialface_low_frequencies():
    assert low_frequency_channels(3) == PARTIALFACE_DROPPED == (0, 1, 2, 3, 8, 9, 10, 16, 17, 24)
    assert low_frequency_channels(0) == (0,)
    assert ChannelMask().dropped == PARTIALFACE_DROPPED


@pytest.mark.parametrize("dropped,planes", [(None, 1), ([0], 1), ([0, 5, 63], 3), ([], 2)])
def test_masking_keeps_exactly_the_configured_channels(dropped, planes):
    mask = ChannelMask(dropped, planes=planes)
    dropped_set = set(PARTIALFACE_DROPPED if dropped is None else dropped)
    expected = [64 * p + i for p in range(planes) for i in range(64) if i not in dropped_set]
    assert list(mask.kept) == expected and mask.num_kept == len(expected)
    x = torch.rand(2, planes, 16, 16)
    m = FrequencyMasking(mask, colour="rgb" if planes > 1 else None)  # the planes as given (no YCbCr)
    out = m(x)
    assert out.shape == (2, len(expected), 2, 2)
    assert torch.equal(out, block_dct(x)[:, expected])
    full = m.expand(out)
    assert torch.equal(full[:, expected], out)
    assert not full[:, [i for i in range(64 * planes) if i not in expected]].any()


def test_masking_removes_the_visible_image():
    x = torch.rand(1, 1, 64, 64)
    m = FrequencyMasking()
    seen = m.to_image(m(x))
    # The DC channel is gone: every 8x8 block of what survives averages to zero.
    assert seen.reshape(8, 8, 8, 8).permute(0, 2, 1, 3).mean(dim=(2, 3)).abs().max() < 1e-5
    everything = FrequencyMasking(ChannelMask([]))
    assert torch.allclose(everything.to_image(everything(x)), x, atol=1e-5)


def test_bad_masks_are_rejected():
    with pytest.raises(ValueError, match=r"\[64\].*0\.\.63"):
        ChannelMask([0, 64])
    with pytest.raises(ValueError, match="all 64"):
        ChannelMask(range(64))
    with pytest.raises(ValueError, match="colour planes"):
        FrequencyMasking(ChannelMask(planes=3))(torch.zeros(1, 1, 8, 8))


def test_hflip_in_the_dct_domain_is_exact():
    from mixup_env.transform import block_hflip

    x = torch.rand(3, 2, 16, 24, dtype=torch.float64)
    assert torch.allclose(block_hflip(block_dct(x)), block_dct(x.flip(-1)), atol=1e-12)
    m = FrequencyMasking(ChannelMask(planes=2))
    xf = x.float()
    assert torch.allclose(m.hflip(m(xf)), m(xf.flip(-1)), atol=1e-5)
    assert torch.allclose(m.hflip(m.hflip(m(xf))), m(xf))
    with pytest.raises(ValueError, match=r"\(N, 64\*C, h, w\)"):
        block_hflip(torch.zeros(1, 10, 2, 2))
