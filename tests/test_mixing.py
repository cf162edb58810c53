import math

import pytest
import torch

from mixup_env.mixing import mix_batch, sample_dirichlet, sample_gamma


def batch(n=12, c=3, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, 4, 4, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("k", [2, 4, 6])
def test_mix_is_a_convex_combination_with_matching_soft_labels(k):
    x, y = batch()
    r = mix_batch(x, y, k, 5, alpha=1.0, generator=torch.Generator().manual_seed(1))
    assert r.inputs.shape == x.shape and r.soft_labels.shape == (12, 5)
    assert (r.weights >= 0).all() and torch.allclose(r.weights.sum(1), torch.ones(12))
    assert torch.allclose(r.soft_labels.sum(1), torch.ones(12))
    # the mix is exactly sum_j w_j x_{partner_j}, and the soft label the same combination of one-hots
    expect = torch.einsum("nk,nkchw->nchw", r.weights, x[r.partners])
    assert torch.allclose(r.inputs, expect, atol=1e-6)
    onehot = torch.nn.functional.one_hot(y, 5).float()
    assert torch.allclose(r.soft_labels, torch.einsum("nk,nkc->nc", r.weights, onehot[r.partners]), atol=1e-6)
    # partners: itself first, then k-1 distinct others
    assert torch.equal(r.partners[:, 0], torch.arange(12))
    for row in r.partners.tolist():
        assert len(set(row)) == k
    assert (r.weights > 0).all()  # Dirichlet draws are almost surely positive


def test_k_equal_1_leaves_the_batch_unchanged():
    x, y = batch()
    r = mix_batch(x, y, 1, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.inputs, x)
    assert torch.equal(r.soft_labels, torch.nn.functional.one_hot(y, 5).float())
    # and per sample: rows with k = 1 stay exactly themselves even when others mix
    ks = torch.tensor([1, 3] * 6)
    r = mix_batch(x, y, ks, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.inputs[ks == 1], x[ks == 1])
    assert not torch.allclose(r.inputs[ks == 3], x[ks == 3])
    assert ((r.weights > 0).sum(1) == ks).all()


def test_seeded_generator_reproduces_the_mix():
    x, y = batch()
    a = mix_batch(x, y, 3, 5, generator=torch.Generator().manual_seed(7))
    b = mix_batch(x, y, 3, 5, generator=torch.Generator().manual_seed(7))
    c = mix_batch(x, y, 3, 5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.partners, b.partners)
    assert not torch.equal(a.weights, c.weights)


def test_soft_labels_in_soft_labels_out():
    x, y = batch()
    soft = mix_batch(x, y, 2, 5, generator=torch.Generator().manual_seed(0)).soft_labels
    r = mix_batch(x, soft, 3, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(r.soft_labels.sum(1), torch.ones(12))


def test_bad_k_and_labels_are_rejected():
    x, y = batch(n=4)
    with pytest.raises(ValueError, match=r"k=5 needs 5 distinct images.*batch has 4.*1\.\.4"):
        mix_batch(x, y, 5, 5)
    with pytest.raises(ValueError, match=">= 1"):
        mix_batch(x, y, 0, 5)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        mix_batch(x, y, torch.tensor([2, 2]), 5)
    with pytest.raises(TypeError, match="integer"):
        mix_batch(x, y, 2.5, 5)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        mix_batch(x, torch.tensor([0, 1, 2, 3]), 2, 3)
    with pytest.raises(ValueError, match="alpha"):
        mix_batch(x, y, 2, 5, alpha=0.0)


@pytest.mark.parametrize("a", [0.3, 1.0, 4.0])
def test_gamma_sampler_moments(a):
    g = sample_gamma(torch.full((40000,), a, dtype=torch.float64), torch.Generator().manual_seed(0))
    assert (g > 0).all()
    # mean a, variance a; 40000 draws: standard error of the mean sqrt(a / 40000)
    assert abs(float(g.mean()) - a) < 5 * math.sqrt(a / 40000)
    assert abs(float(g.var()) - a) < 0.05 * a + 0.01


def test_dirichlet_mean_follows_concentration():
    conc = torch.tensor([1.0, 2.0, 5.0]).expand(20000, 3).contiguous()
    w = sample_dirichlet(conc, torch.Generator().manual_seed(0))
    assert torch.allclose(w.sum(1), torch.ones(20000))
    assert torch.allclose(w.mean(0), torch.tensor([0.125, 0.25, 0.625]), atol=0.01)
    # a large alpha makes the weights nearly equal; a small one lets one image dominate
    x, y = batch()
    flat = mix_batch(x, y, 4, 5, alpha=1000.0, generator=torch.Generator().manual_seed(0)).weights
    peaked = mix_batch(x, y, 4, 5, alpha=0.05, generator=torch.Generator().manual_seed(0)).weights
    assert (flat - 0.25).abs().max() < 0.05
    assert peaked.max(1).values.mean() > 0.8
