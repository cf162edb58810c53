"""Model-inversion attacks and privacy metrics, on tiny configurations (synthetic faces at 32x32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fr_models import FRConfig, FRTrainer
from fr_models.card import ModelCard
from privacy.attacks._loop import Schedule
from privacy.attacks import (
    BlackBoxOracle,
    TargetModel,
    attack_metrics,
    fit_eigenfaces,
    fit_vae,
    invert,
    invert_class_vectors,
    invert_mean_outputs,
    load_target,
    observe_mixes,
    privacy_score,
    psnr,
    random_augment,
    ssim,
    train_evaluator,
    train_output_decoder,
    train_unmixer,
    unmix,
)
from fr_models.data import check_identity_split, images_to_tensor
from fr_models.training import fit
from fr_models.synthetic import make_synthetic_faces
from mixup_env import ChannelMask, FrequencyMasking, block_dct, mix_batch
from mixup_env.transform import model_card
from privacy.report import pareto_dominated, plot_pareto, save_figure


@pytest.fixture(scope="module")
def faces() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = make_synthetic_faces(num_identities=8, images_per_identity=8, size=32, seed=3)
    return images_to_tensor(images), torch.from_numpy(labels)


def tiny_target(num_classes: int = 6, frequency: bool = True, seed: int = 0, train_on=None) -> TargetModel:
    """A small FR model on 32x32 faces (frequency or pixel input), trained a few epochs if faces are given."""
    masking = FrequencyMasking(ChannelMask()) if frequency else None
    cfg = FRConfig(in_channels=masking.out_channels if masking else 1, input_size=(4, 4) if masking else (32, 32),
                   num_classes=num_classes, embedding_dim=16, backbone="grid" if masking else "pixel",
                   widths=(8, 16) if masking else (4, 8, 8, 8))
    trainer = FRTrainer(cfg, seed=seed)
    if train_on is not None:
        x, y = train_on
        keep = y < num_classes
        inputs = masking(x[keep]) if masking else x[keep]
        trainer.backbone.set_input_stats(inputs.mean(dim=(0, 2, 3)), inputs.std(dim=(0, 2, 3)))
        fit(trainer, inputs, y[keep], epochs=8, batch_size=16, seed=seed)
    card = ModelCard(input="masked_dct", image_size=(32, 32), class_names=[f"id{i}" for i in range(num_classes)])
    return TargetModel(trainer.backbone, trainer.head, masking, (32, 32), card)


def test_whitebox_gradient_flows_through_dct_and_mask() -> None:
    """The image gradient is non-zero, and has no content at all in the dropped frequencies: it really came back
    through the mask and the (orthonormal) block DCT, not around them."""
    target = tiny_target()
    x = torch.rand(3, 1, 32, 32, requires_grad=True)
    target(x)[:, 1].sum().backward()
    g = block_dct(x.grad)
    dropped = list(ChannelMask().dropped)
    kept = [c for c in range(64) if c not in dropped]
    assert g[:, kept].abs().max() > 1e-6
    assert g[:, dropped].abs().max() < 1e-6 * g[:, kept].abs().max()
    assert all(not p.requires_grad for p in target.parameters())


def test_target_stays_in_eval_mode() -> None:
    target = tiny_target()
    target.train()
    assert not target.training and not any(m.training for m in target.modules())


def test_invert_raises_confidence_and_keeps_the_best_restart(faces) -> None:
    target = tiny_target(seed=1, train_on=faces)
    classes = torch.tensor([0, 3, 5])
    res = invert(target, classes, None, restarts=2, steps=25, views=1, loss="ce", seed=0)
    assert res.images.shape == (3, 1, 32, 32) and res.images.min() >= 0 and res.images.max() <= 1
    assert torch.equal(res.classes, classes)
    with torch.no_grad():  # the starts are mid-grey plus a little noise
        start = torch.softmax(target(torch.full((3, 1, 32, 32), 0.5)), 1)[torch.arange(3), classes]
        assert torch.allclose(torch.softmax(target(res.images), 1)[torch.arange(3), classes], res.target_confidence)
    assert (res.target_confidence > start + 0.03).all()
    assert (res.target_confidence > 1 / 6).all()
    margin = invert(target, classes, None, restarts=1, steps=25, views=1, seed=0)
    assert margin.info["loss"] == "margin"  # PLG-MI's max-margin objective, the default
    assert (margin.target_confidence > start).all()
    with pytest.raises(ValueError, match="identities of the target"):
        invert(target, [6], None, steps=1)
    with pytest.raises(ValueError, match="accepted 'margin' or 'ce'"):
        invert(target, [0], None, steps=1, loss="hinge")


def test_invert_with_priors_stays_in_their_image_space(faces) -> None:
    x, _ = faces
    target = tiny_target(seed=2)
    eig = fit_eigenfaces(x[:40], n_components=10)
    assert eig.latent_dim == 10
    recon = eig.decode(eig.encode(x[:4]))
    assert (recon - x[:4]).abs().mean() < 0.1  # the faces are in (close to) the span
    res = invert(target, [1, 2], eig, restarts=1, steps=10, views=1)
    assert res.images.shape == (2, 1, 32, 32) and res.info["prior"] == "EigenfacePrior"
    res = invert(target, [1, 2], eig, restarts=2, steps=3, views=1, public_images=x[:40])
    assert res.info["starts"] == "public faces" and res.images.shape == (2, 1, 32, 32)
    # PPA's initial selection: the starts of identity c are the public faces (or mirrors) the target rates highest.
    from privacy.attacks.whitebox import _public_starts

    starts = _public_starts(target, eig, x[:40], torch.tensor([1, 2]), 3, 16)
    cand = torch.cat([x[:40], x[:40].flip(-1)])
    with torch.no_grad():
        best = torch.log_softmax(target(cand), 1)[:, 2].topk(3).indices
    assert torch.allclose(starts[3:], eig.encode(cand[best]), atol=1e-4)
    vae = fit_vae(x[:40], latent_dim=8, schedule=Schedule(2, batch_size=16, min_updates=1))
    assert vae.decode(torch.zeros(1, 8)).shape == (1, 1, 32, 32)
    res = invert(target, [1], vae, restarts=2, steps=5, views=2)
    assert res.images.shape == (1, 1, 32, 32) and 0 <= float(res.target_confidence) <= 1


def test_blackbox_decoders_and_oracle(faces) -> None:
    x, y = faces
    target = tiny_target()
    scores = BlackBoxOracle(target, "probabilities")
    out = scores(x[:5])
    assert out.shape == (5, 6) and torch.allclose(out.sum(1), torch.ones(5)) and not out.requires_grad
    assert scores.queries == 5
    dec = train_output_decoder(scores, x[:20], views_per_image=2, schedule=Schedule(1, min_updates=1))
    assert scores.queries == 5 + 40
    assert 1 / 6 <= float(dec.typical_top1) <= 1  # a top-1 score of the public outputs
    single = dec.prepare(out, keep=torch.ones(5, dtype=torch.long))
    assert ((single != 0).sum(1) == 1).all() and torch.equal(single.argmax(1), out.argmax(1))
    res = invert_class_vectors(dec, [0, 4], 6)
    assert res.images.shape == (2, 1, 32, 32)
    emb = BlackBoxOracle(target, "embedding")
    dec_e = train_output_decoder(emb, x[:20], views_per_image=1, schedule=Schedule(1, min_updates=1))
    res = invert_mean_outputs(dec_e, emb(x[20:30]), y[20:30])
    assert torch.equal(res.classes, y[20:30].unique()) and len(res.images) == len(res.classes)
    with pytest.raises(ValueError, match="embeddings"):
        invert_class_vectors(dec_e, [0], 6)
    with pytest.raises(ValueError, match="accepted probabilities, embedding"):
        BlackBoxOracle(target, "logits")


def _mix(k: int):
    def mix(x: torch.Tensor, gen: torch.Generator):
        r = mix_batch(x, torch.zeros(len(x), dtype=torch.long), k, 1, 1.0, gen)
        return r.inputs, r.partners, r.weights

    return mix


def test_observed_mixes_and_their_dominant_faces(faces) -> None:
    x, _ = faces
    masking = FrequencyMasking(ChannelMask())
    obs, dom, w = observe_mixes(x[:32], masking, _mix(1), batch_size=8)
    assert obs.shape == (32, masking.out_channels, 4, 4) and torch.allclose(w, torch.ones(32))
    assert torch.allclose(obs, masking(x[dom]), atol=1e-6)  # k = 1: each observation is its own face, masked
    obs, dom, w = observe_mixes(x[:32], masking, _mix(4), batch_size=8, rounds=2)
    assert len(obs) == 64 and (w >= 0.25 - 1e-6).all() and (w <= 1).all()  # the largest of 4 weights is >= 1/4
    unmixer = train_unmixer(x[32:], masking, _mix(4), schedule=Schedule(1, batch_size=8, min_updates=1))
    res = unmix(unmixer, obs, dom % 8)
    assert res.images.shape == (64, 1, 32, 32) and res.images.min() >= 0 and res.images.max() <= 1


def test_psnr_and_ssim_values() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    # Flat images: no variance, so SSIM is the luminance term alone, (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.5, 0.25, 0.01**2
    flat = ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b))
    assert flat.item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)
    assert torch.allclose(psnr(torch.zeros(1, 1, 16, 16), torch.full((1, 1, 16, 16), 0.1)), torch.tensor([20.0]))
    # Against the textbook form: a full 2-D 11x11 Gaussian window by convolution, on non-square images.
    u, v = torch.rand(3, 1, 24, 30, generator=g), torch.rand(3, 1, 24, 30, generator=g)
    k1 = torch.exp(-((torch.arange(11.0) - 5) ** 2) / (2 * 1.5**2))
    k1 = k1 / k1.sum()
    w = (k1[:, None] * k1[None, :]).view(1, 1, 11, 11)
    mu_u, mu_v = F.conv2d(u, w), F.conv2d(v, w)
    var_u, var_v = F.conv2d(u * u, w) - mu_u**2, F.conv2d(v * v, w) - mu_v**2
    cov = F.conv2d(u * v, w) - mu_u * mu_v
    ref = ((2 * mu_u * mu_v + 1e-4) * (2 * cov + 9e-4)) / ((mu_u**2 + mu_v**2 + 1e-4) * (var_u + var_v + 9e-4))
    assert torch.allclose(ssim(u, v), ref.mean(dim=(1, 2, 3)), atol=1e-5)
    noisy = (x + 0.2 * torch.randn(2, 1, 32, 32, generator=g)).clamp(0, 1)
    assert (ssim(x, noisy) < 0.9).all() and torch.allclose(ssim(x, noisy), ssim(noisy, x))
    with pytest.raises(ValueError, match="one shape"):
        psnr(x, x[:1])


def test_random_augment_is_seeded_and_differentiable() -> None:
    x = torch.rand(4, 1, 32, 32, requires_grad=True)
    a = random_augment(x, torch.Generator().manual_seed(1))
    b = random_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_evaluator_and_attack_metrics(faces) -> None:
    x, y = faces
    ev = train_evaluator(x, y, [f"s{i}" for i in range(8)], holdout=0.25,
                         schedule=Schedule(80, batch_size=32, min_updates=1))
    assert ev.class_names == [f"s{i}" for i in range(8)] and ev.num_classes == 8
    assert ev.val_accuracy > 0.5  # synthetic identities are easy; chance is 0.125
    # The private images themselves as "reconstructions": each is its own nearest neighbour.
    m = attack_metrics(ev, x, y, x, y)
    assert m["knn_dist"] < 1e-3 and m["ssim"] > 0.999 and m["psnr"] > 60
    assert m["top1"] > 0.5 and m["top1_over_chance"] == pytest.approx(m["top1"] * 8)
    assert m["chance_top1"] == 1 / 8 and m["chance_top5"] == 5 / 8
    assert m["chance_majority"] == float(np.bincount(y.numpy()).max() / len(y)) and m["attacked_identities"] == 8
    for k in ("top1", "top5", "knn_dist", "psnr", "ssim"):  # bootstrap 95 % intervals around each mean
        lo, hi = m["intervals"][k]
        assert lo <= m[k] + 1e-9 and m[k] <= hi + 1e-9, k
    assert m["judge"] == {"name": "in_house_evaluator", "identities": 8, "accuracy_on_private_faces": ev.val_accuracy}
    half = attack_metrics(ev, x[y < 4], y[y < 4], x, y)
    assert half["attacked_identities"] == 4 and half["chance_top1"] == 1 / 8  # uniform over the judge's classes
    wrong = attack_metrics(ev, x, (y + 1) % 8, x, y)  # every image claimed to show the next identity
    assert wrong["top1"] < m["top1"] and wrong["knn_dist"] > m["knn_dist"]
    with pytest.raises(ValueError, match="private identities 0..7"):
        attack_metrics(ev, x[:1], torch.tensor([8]), x, y)


def test_privacy_score_definition() -> None:
    chance = {"top1": 0.01, "top5": 0.05, "chance_top1": 0.01, "chance_top5": 0.05}
    perfect = {"top1": 1.0, "top5": 1.0, "chance_top1": 0.01, "chance_top5": 0.05}
    half = {"top1": 0.505, "top5": 0.525, "chance_top1": 0.01, "chance_top5": 0.05}
    assert privacy_score({"a": chance}) == pytest.approx(1.0)
    assert privacy_score({"a": perfect}) == pytest.approx(0.0)
    assert privacy_score({"a": chance, "b": half}) == pytest.approx(0.5)  # the strongest attack decides
    with pytest.raises(ValueError):
        privacy_score({})


def test_identity_split_checks() -> None:
    labels = np.repeat(np.arange(6), 3)
    check_identity_split(labels, np.arange(12), np.arange(12, 18))
    with pytest.raises(ValueError, match=r"on both the private and the public side \(e.g. \['c'\]\)"):
        check_identity_split(labels, np.arange(9), np.arange(8, 18), names=list("abcdef"))
    with pytest.raises(ValueError, match="public side has 1 identities, the attack needs at least 2"):
        check_identity_split(labels, np.arange(15), np.arange(15, 18))
    with pytest.raises(ValueError, match="another data set"):
        check_identity_split(labels, np.arange(12), np.arange(12, 30))


def test_load_target_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no FR model file"):
        load_target(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable FR model checkpoint"):
        load_target(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not an FR model checkpoint: it holds \['weights'\]"):
        load_target(tmp_path / "other.pt")
    trainer = FRTrainer(FRConfig(in_channels=54, input_size=(4, 4), num_classes=3, widths=(8, 16)))
    trainer.save(tmp_path / "nometa.pt")
    with pytest.raises(ValueError, match="records no image size"):
        load_target(tmp_path / "nometa.pt")
    masking = FrequencyMasking(ChannelMask())
    trainer.card = model_card(masking, 32, class_names=["a", "b", "c"])
    trainer.save(tmp_path / "ok.pt")
    target = load_target(tmp_path / "ok.pt")  # the transform comes from the card: the same as the model's
    assert target.image_size == (32, 32) and target(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(target.transform(x), masking(x)) and target.class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"reads images \(N, C, 32, 32\)"):
        target(torch.rand(2, 1, 64, 64))


def test_pareto_plot(tmp_path) -> None:
    assert pareto_dominated([(0.5, 0.5), (0.5, 0.5)]) == [False, False]  # equal points do not dominate each other
    assert pareto_dominated([(0.9, 0.9), (0.1, 0.1)]) == [False, True]
    out = plot_pareto(["a", "b", "c"], [0.9, 0.5, 0.4], [0.1, 0.6, 0.5], tmp_path / "p.png")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_figure_writes_a_smaller_palette_png_of_the_same_picture(tmp_path) -> None:
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.imshow(np.random.default_rng(0).integers(0, 256, (64, 64)), cmap="gray", vmin=0, vmax=255)
    ax.set_xlabel("= s6", color="green")
    fig.savefig(tmp_path / "rgba.png", dpi=80)
    out = save_figure(fig, tmp_path / "p.png", dpi=80, colors=64)
    with Image.open(out) as im, Image.open(tmp_path / "rgba.png") as ref:
        assert im.mode == "P" and im.size == ref.size
        assert len(im.getcolors(256)) <= 64
        diff = np.abs(np.asarray(im.convert("RGB"), float) - np.asarray(ref.convert("RGB"), float))
    assert diff.mean() < 4.0  # the same picture, up to the palette's rounding
    assert out.stat().st_size < (tmp_path / "rgba.png").stat().st_size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    with pytest.raises(ValueError, match="colors must be in 2..256, got 1"):
        save_figure(fig, tmp_path / "q.png", colors=1)


def test_small_sets_get_a_minimum_number_of_updates() -> None:
    from privacy.attacks._loop import minibatches, total_updates

    assert total_updates(1500, 64, 60, 600) == 60 * 23  # large sets: epochs decide
    assert total_updates(120, 64, 60, 600) == 600  # AT&T's 120 public faces: 60 epochs would be 60 updates
    batches = list(minibatches(10, 4, 3, torch.Generator().manual_seed(0), "t", min_updates=1))
    assert len(batches) == 6 and all(len(b) == 4 for b in batches)
    assert all(len(set(b.tolist())) == 4 for b in batches)  # no face twice in one batch
    assert len(list(minibatches(10, 4, 1, torch.Generator().manual_seed(0), "t", min_updates=7))) == 7


def test_ssim_and_psnr_equal_scikit_images_reference() -> None:
    """The batched torch SSIM/PSNR are scikit-image's (Wang et al. 2004: Gaussian window sigma 1.5, population
    covariance, valid windows) on the same images; benchmarks/similarity.py times them side by side."""
    metrics = pytest.importorskip("skimage.metrics", reason="needs scikit-image (the test extra)")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 40, 36, generator=g)
    y = (x + 0.15 * torch.randn(4, 3, 40, 36, generator=g)).clamp(0, 1)
    ref_ssim = [metrics.structural_similarity(x[i].double().numpy(), y[i].double().numpy(), channel_axis=0,
                                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              data_range=1.0) for i in range(4)]
    ref_psnr = [metrics.peak_signal_noise_ratio(x[i].double().numpy(), y[i].double().numpy(), data_range=1.0)
                for i in range(4)]
    assert torch.allclose(ssim(x, y).double(), torch.tensor(ref_ssim, dtype=torch.float64), atol=2e-5)
    assert torch.allclose(psnr(x, y).double(), torch.tensor(ref_psnr, dtype=torch.float64), atol=1e-3)
