"""Issue 14: upsampled frequency input, the ResNet body with its two stems, the training recipe, honest baselines."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fr_models import FRConfig, FRTrainer, make_backbone
from fr_models.backbones import FaceResNet
from fr_models.card import ModelCard
from fr_models.evaluation import balanced_accuracy, chance_levels
from fr_models.heads import ArcFaceHead, CosFaceHead
from fr_models.recipes import RECIPES, default_recipe, get_recipe
from fr_models.trainer import lr_factor
from fr_models.training import channel_stats, fit, random_shift
from mixup_env.mixing import mix_batch
from mixup_env.transform import (
    ChannelMask,
    FrequencyMasking,
    block_dct,
    block_shift,
    input_transform,
    model_card,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)


def _images(n: int = 3, planes: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, planes, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------------------------- transform
@pytest.mark.parametrize("f", [1, 2, 4, 8])
def test_upsampled_maps_have_the_resolution_of_the_factor(f):
    m = FrequencyMasking(upsample=f)
    y = m(_images(2, size=32).float())
    assert y.shape == (2, 54, 32 * f // 8, 32 * f // 8)
    assert m.output_size(32) == (32 * f // 8,) * 2
    # the maps are the block DCT of the bilinearly upsampled face, kept channels only
    up = F.interpolate(_images(2, size=32).float(), scale_factor=f, mode="bilinear", align_corners=False) if f > 1 \
        else _images(2, size=32).float()
    assert torch.allclose(y, block_dct(up)[:, list(m.mask.kept)], atol=1e-5)


@pytest.mark.parametrize("f,colour,planes", [(1, "grey", 1), (4, "grey", 1), (8, "grey", 1), (4, "ycbcr", 3),
                                             (2, "rgb", 3)])
def test_mirroring_in_the_dct_domain_is_exact(f, colour, planes):
    m = FrequencyMasking(ChannelMask(planes=planes), upsample=f, colour=colour)
    x = _images(2, planes, 24)
    assert torch.allclose(m.hflip(m(x)), m(x.flip(-1)), atol=1e-12)


@pytest.mark.parametrize("f", [1, 4])
@pytest.mark.parametrize("dy,dx", [(1, 0), (0, -1), (-2, 1)])
def test_whole_block_shift_in_the_dct_domain_is_exact(f, dy, dx):
    m = FrequencyMasking(upsample=f)
    x = _images(2, 1, 32)
    u = m.prepare(x)  # the image the DCT sees (the upsampled face)
    h, w = u.shape[-2:]
    shifted = torch.zeros_like(u)  # u moved 8*dy pixels down and 8*dx right, zeros coming in
    sy, sx = 8 * dy, 8 * dx
    shifted[..., max(sy, 0) : h + min(sy, 0), max(sx, 0) : w + min(sx, 0)] = \
        u[..., max(-sy, 0) : h + min(-sy, 0), max(-sx, 0) : w + min(-sx, 0)]
    expect = FrequencyMasking(upsample=1)(shifted)
    assert torch.allclose(block_shift(m(x), dy, dx), expect, atol=1e-12)
    with pytest.raises(ValueError, match="out of range"):
        block_shift(m(x), m(x).shape[-2], 0)


def test_random_shift_shifts_each_face_by_its_own_whole_blocks():
    y = torch.randn(6, 5, 7, 9)
    out = random_shift(y, 2, np.random.default_rng(3))
    d = np.random.default_rng(3).integers(-2, 3, size=(2, 6))
    for i in range(6):
        assert torch.equal(out[i : i + 1], block_shift(y[i : i + 1], int(d[0, i]), int(d[1, i])))
    assert random_shift(y, 0, np.random.default_rng(0)) is y
    with pytest.raises(ValueError, match="max_shift=7 is out of range"):
        random_shift(y, 7, np.random.default_rng(0))


def test_ycbcr_round_trip_and_mixing_commutes_with_the_transform():
    x = _images(4, 3, 16)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-12)
    # Y of a grey pixel is its value, its chroma is 1/2
    grey = torch.full((1, 3, 8, 8), 0.25, dtype=torch.float64)
    assert torch.allclose(rgb_to_ycbcr(grey)[0, :, 0, 0], torch.tensor([0.25, 0.5, 0.5], dtype=torch.float64))
    m = FrequencyMasking(ChannelMask(planes=3), upsample=4, colour="ycbcr")
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    mixed_images = (w.view(3, 1, 1, 1) * x[:3]).sum(0, keepdim=True)
    mixed_maps = (w.view(3, 1, 1, 1) * m(x[:3])).sum(0, keepdim=True)
    assert torch.allclose(m(mixed_images), mixed_maps, atol=1e-12)  # convex weights: the YCbCr offset survives


def test_transform_settings_are_checked_with_clear_errors():
    with pytest.raises(ValueError, match=r"upsample=3 is not supported: accepted factors \[1, 2, 4, 8\]"):
        FrequencyMasking(upsample=3)
    with pytest.raises(ValueError, match="unknown colour setting 'hsv'"):
        FrequencyMasking(colour="hsv")
    with pytest.raises(ValueError, match="colour='ycbcr' needs 3 colour planes, the mask has 1"):
        FrequencyMasking(colour="ycbcr")
    with pytest.raises(ValueError, match="colour='ycbcr' needs 3 colour planes, the mask has 2"):
        FrequencyMasking(ChannelMask(planes=2), colour="ycbcr")
    assert FrequencyMasking(ChannelMask(planes=2)).colour == "rgb"
    with pytest.raises(ValueError, match="colour='rgb' needs 2 or more colour planes, the mask has 1"):
        FrequencyMasking(colour="rgb")
    with pytest.raises(ValueError, match="colour='ycbcr' needs 3 colour planes, the mask has 1"):
        FrequencyMasking(colour="ycbcr")
    with pytest.raises(ValueError, match="colour='grey' needs 1 colour plane, the mask has 3"):
        FrequencyMasking(ChannelMask(planes=3), colour="grey")
    with pytest.raises(ValueError, match="images have 3 colour planes"):
        FrequencyMasking()(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="image size 31x31 with upsample=4 does not fill whole 8x8 blocks: accepted "
                                         "sides that are positive multiples of 2"):
        FrequencyMasking(upsample=4)(torch.rand(1, 1, 31, 31))
    with pytest.raises(ValueError, match="multiples of 8"):
        FrequencyMasking().output_size(60)
    assert FrequencyMasking(upsample=8).output_size((13, 7)) == (13, 7)


def test_model_card_rebuilds_the_transform():
    m = FrequencyMasking(ChannelMask(planes=3), upsample=4, colour="ycbcr")
    card = model_card(m, 16, defence="mask")
    assert card.upsample == 4 and card.colour == "ycbcr" and card.image_size == (16, 16) and card.defence == "mask"
    x = _images(2, 3, 16).float()
    assert torch.equal(input_transform(card)(x), m(x))
    grey = FrequencyMasking(ChannelMask(dropped=[0, 1, 8]))
    y = torch.rand(2, 1, 32, 32)
    assert torch.equal(input_transform(model_card(grey, 32))(y), grey(y))
    assert isinstance(input_transform(model_card(None, 32)), torch.nn.Identity)
    old = ModelCard.from_dict({"input": "masked_dct", "dropped_channels": [0], "planes": 3,
                               "image_size": [16, 16]})  # a checkpoint from before issue 14
    assert input_transform(old).upsample == 1 and input_transform(old).colour == "rgb"


# ----------------------------------------------------------------------------------------------- backbones
@pytest.mark.parametrize("stem,f,channels,size,entry", [
    ("pixel", 1, 1, 64, 0), ("pixel", 1, 3, 32, 0), ("frequency", 8, 54, 32, 0), ("frequency", 4, 54, 16, 1),
    ("frequency", 2, 162, 8, 2), ("frequency", 1, 54, 4, 3)])
def test_resnet_stems_feed_the_stage_of_their_resolution(stem, f, channels, size, entry):
    widths = (8, 16, 16, 32)
    net = make_backbone("resnet", channels, (size, size), 24, widths, stem=stem, upsample=f)
    assert isinstance(net, FaceResNet) and net.entry == entry
    z = net(torch.randn(5, channels, size, size))
    assert z.shape == (5, 24)
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    # the stem maps to the width of the stage before the entry, at the input's resolution
    assert net.stem[0].out_channels == (widths[entry - 1] if entry else widths[0])
    assert net.stem[0].kernel_size == ((3, 3) if stem == "pixel" else (1, 1))
    stages = sum(1 for m in net.features if m.conv1.stride == (2, 2))
    assert stages == len(widths) - entry  # the skipped stages are not built
    # the final maps have the image resolution / 2**stages, whatever the stem
    image = size << entry
    assert net.embed[2].in_features == widths[-1] * (image // 16) ** 2


def test_pixel_and_frequency_models_share_the_body_after_the_entry():
    pix = FaceResNet(1, (64, 64), 32, (8, 16, 32, 64), stem="pixel")
    freq = FaceResNet(54, (32, 32), 32, (8, 16, 32, 64), stem="frequency", upsample=4)
    shapes = lambda net: [tuple(p.shape) for p in net.features[-3:].parameters()]  # noqa: E731
    assert shapes(pix) == shapes(freq)
    assert sum(p.numel() for p in freq.parameters()) < sum(p.numel() for p in pix.parameters()) + 54 * 8


def test_resnet_bad_input_is_named():
    with pytest.raises(ValueError, match="known backbones: grid, pixel, resnet, unblock"):
        make_backbone("iresnet100", 54, (8, 8), 32)
    with pytest.raises(ValueError, match="unknown stem 'dct'; accepted: pixel, frequency"):
        make_backbone("resnet", 54, (8, 8), 32, stem="dct")
    with pytest.raises(ValueError, match="upsampled by 1, 2, 4 or 8"):
        make_backbone("resnet", 54, (8, 8), 32, stem="frequency", upsample=3)
    with pytest.raises(ValueError, match="must be a multiple of 16"):
        make_backbone("resnet", 1, (40, 40), 32, stem="pixel")
    with pytest.raises(ValueError, match="skip 3 stages, but the body has only 2"):
        make_backbone("resnet", 54, (8, 8), 32, (8, 16), stem="frequency", upsample=1)
    with pytest.raises(ValueError, match="only the resnet backbone takes block counts"):
        make_backbone("grid", 54, (8, 8), 32, blocks=(1, 1))
    with pytest.raises(ValueError, match="unknown FR recipe 'huge'; known recipes: real"):
        get_recipe("huge")
    with pytest.raises(ValueError, match="dropout=1.0 is invalid: accepted a probability 0 <= dropout < 1"):
        make_backbone("resnet", 54, (16, 16), 32, stem="frequency", upsample=4, dropout=1.0)
    with pytest.raises(ValueError, match="only the resnet backbone takes an embedding dropout"):
        make_backbone("grid", 54, (8, 8), 32, dropout=0.2)


def test_embedding_dropout_acts_in_training_only():
    torch.manual_seed(0)
    net = make_backbone("resnet", 54, (16, 16), 32, (8, 8, 8, 16), stem="frequency", upsample=4, dropout=0.5)
    plain = make_backbone("resnet", 54, (16, 16), 32, (8, 8, 8, 16), stem="frequency", upsample=4)
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 1
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    # without dropout the embedding layer keeps its old keys (models saved before dropout existed load unchanged)
    assert {k for k in plain.state_dict() if k.startswith("embed.")} >= {"embed.2.weight", "embed.3.running_mean"}
    moved = {"embed.3.": "embed.2.", "embed.4.": "embed.3."}
    plain.load_state_dict({next((k.replace(o, n) for o, n in moved.items() if k.startswith(o)), k): v
                           for k, v in net.state_dict().items()})
    x = torch.randn(4, 54, 16, 16)
    net.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(x))
        net.train()
        assert not torch.allclose(net(x), net(x))  # two dropout draws


def test_recipe_builds_the_fr_config():
    cfg = get_recipe("real").replace(dropout=0.3, blocks=(1, 2, 2, 1)).fr_config((54, 16, 16), 7, stem="frequency")
    assert (cfg.in_channels, cfg.input_size, cfg.num_classes) == (54, (16, 16), 7)
    assert (cfg.backbone, cfg.head, cfg.upsample, cfg.dropout, cfg.blocks) == ("resnet", "cosface", 4, 0.3, (1, 2, 2, 1))
    legacy = get_recipe("legacy").fr_config((54, 8, 8), 7, norm="group")
    assert (legacy.backbone, legacy.blocks, legacy.dropout, legacy.norm, legacy.upsample) == ("grid", None, 0.0,
                                                                                             "group", 1)


# ----------------------------------------------------------------------------------------------- heads
def _head_case(head):
    """Two classes in 2-D: centres at 0 and 90 degrees; one embedding at 30 degrees."""
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    return torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6)]])


def test_cosface_with_a_soft_label_against_a_hand_computed_case():
    head = CosFaceHead(2, 2, scale=10.0, margin=0.2)
    emb = _head_case(head)
    c0, c1 = math.cos(math.pi / 6), math.sin(math.pi / 6)  # cosines to class 0 and class 1
    # component "class 0": logits (10 (c0 - 0.2), 10 c1); component "class 1": (10 c0, 10 (c1 - 0.2))
    l0 = -10 * (c0 - 0.2) + math.log(math.exp(10 * (c0 - 0.2)) + math.exp(10 * c1))
    l1 = -10 * (c1 - 0.2) + math.log(math.exp(10 * c0) + math.exp(10 * (c1 - 0.2)))
    loss = head(emb, torch.tensor([[0.75, 0.25]]))
    assert loss.item() == pytest.approx(0.75 * l0 + 0.25 * l1, rel=1e-5)


def test_arcface_with_a_soft_label_against_a_hand_computed_case():
    head = ArcFaceHead(2, 2, scale=8.0, margin=0.5)
    emb = _head_case(head)
    t0, t1 = math.pi / 6, math.pi / 3  # angles to class 0 and class 1; both + m stay below pi (no guard)
    l0 = -8 * math.cos(t0 + 0.5) + math.log(math.exp(8 * math.cos(t0 + 0.5)) + math.exp(8 * math.cos(t1)))
    l1 = -8 * math.cos(t1 + 0.5) + math.log(math.exp(8 * math.cos(t0)) + math.exp(8 * math.cos(t1 + 0.5)))
    loss = head(emb, torch.tensor([[0.4, 0.6]]))
    assert loss.item() == pytest.approx(0.4 * l0 + 0.6 * l1, rel=1e-5)
    # an embedding pointing away from class 1 (theta = 170 degrees to it): theta + m > pi takes the guard
    a = math.radians(-80)  # 80 degrees from class 0, 170 from class 1
    away = torch.tensor([[math.cos(a), math.sin(a)]])
    target = 8 * (math.cos(math.radians(170)) - 0.5 * math.sin(0.5))
    expect = -target + math.log(math.exp(8 * math.cos(math.radians(80))) + math.exp(target))
    assert head(away, torch.tensor([1])).item() == pytest.approx(expect, rel=1e-5)


# ----------------------------------------------------------------------------------------------- baselines
def test_majority_and_balanced_baselines_on_a_crafted_split():
    train = np.array([0] * 6 + [1] * 2 + [2] * 2)  # identity 0 is the largest in training
    test = np.array([0, 0, 0, 0, 0, 0, 1, 2])
    chance = chance_levels(train, test, num_classes=4)
    assert chance == {"uniform": 0.25, "majority_class": 0.75, "majority_class_balanced": pytest.approx(1 / 3)}
    # a classifier right on identity 0 only: top-1 0.75, but balanced 1/3 (identities 1 and 2 are all wrong)
    pred = np.zeros(8, dtype=int)
    assert balanced_accuracy(pred, test) == pytest.approx(1 / 3)
    pred[6] = 1
    assert balanced_accuracy(pred, test) == pytest.approx((1 + 1 + 0) / 3)
    logits = np.eye(4)[pred]
    assert balanced_accuracy(logits, test) == pytest.approx(2 / 3)
    # the majority class of training may be absent from the test set
    assert chance_levels([3, 3, 1], [1, 2], 4)["majority_class"] == 0.0
    with pytest.raises(ValueError, match="same length"):
        balanced_accuracy([0, 1], [0])


# ----------------------------------------------------------------------------------------------- training
def test_cosine_schedule_warms_up_and_decays():
    assert lr_factor("constant", 50, 100, 0.1) == 1.0
    assert lr_factor("cosine", 0, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor("cosine", 9, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor("cosine", 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor("cosine", 55, 100, 0.1) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 100, 0.1) == pytest.approx(0.0)
    assert lr_factor("cosine", 5, None, 0.1) == 1.0
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        FRConfig(54, (8, 8), 3, lr_schedule="step")


def _tiny_trainer(num_classes: int = 4, **kw) -> FRTrainer:
    r = RECIPES["tiny"]
    cfg = FRConfig(54, (8, 8), num_classes, embedding_dim=r.embedding_dim, backbone="resnet", widths=r.widths,
                   upsample=1, head=r.head, lr=r.lr, weight_decay=r.weight_decay, lr_schedule="cosine", warmup=0.25,
                   **kw)
    return FRTrainer(cfg, seed=0)


def test_trainer_follows_the_schedule_and_decays_weights_only(tmp_path):
    t = _tiny_trainer()
    decayed = {id(p) for g in t.optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in [*t.backbone.named_parameters(), *t.head.named_parameters()]:
        assert (id(p) in decayed) == (p.ndim > 1), name  # conv/linear/head weights only: no bias, no norm
    t.total_updates = 8
    x, y = torch.randn(8, 54, 8, 8), torch.arange(8) % 4
    lrs = []
    for _ in range(8):
        t.train_step(x, y)
        lrs.append(t.optimizer.param_groups[0]["lr"])
    expect = [t.config.lr * lr_factor("cosine", i, 8, 0.25) for i in range(8)]
    assert lrs == pytest.approx(expect)
    t.save(tmp_path / "m.pt")
    assert FRTrainer.load(tmp_path / "m.pt").total_updates == 8


def test_tiny_configuration_trains_in_seconds():
    from fr_models.data import images_to_tensor, load_faces, split_per_identity

    faces = load_faces("synthetic")
    tr, _ = split_per_identity(faces.labels, 0.2, 0)
    m = FrequencyMasking(upsample=1)
    x = m(images_to_tensor(faces.images[tr]))
    y = torch.from_numpy(faces.labels[tr])
    t = _tiny_trainer(faces.num_classes)
    t.backbone.set_input_stats(*channel_stats(x))
    before = float(t.losses(x, y).mean())
    t0 = time.perf_counter()
    history = fit(t, x, y, epochs=15, batch_size=32, seed=0, flip=m.hflip, max_shift=1)
    assert time.perf_counter() - t0 < 60  # generous: this is a behaviour test, not a benchmark
    assert history["updates"] == 15 * (len(tr) // 32) and t.total_updates == history["updates"]
    assert float(t.losses(x, y).mean()) < 0.7 * before
    assert t.accuracy(x, y) > 3 / faces.num_classes


def test_recalibrated_norms_hold_the_statistics_of_clean_faces():
    t = _tiny_trainer()
    x = torch.randn(40, 54, 8, 8) * 3 + 1
    mixed = 0.5 * (x + x.roll(1, 0))  # mixes: less variance than the faces
    t.total_updates = 5
    for _ in range(5):
        t.train_step(mixed, torch.arange(40) % 4)
    weights = {k: v.clone() for k, v in t.backbone.state_dict().items() if "running" not in k and "batches" not in k}
    t.recalibrate_norms(x, batch_size=16)
    stem_bn = t.backbone.stem[1]
    with torch.no_grad():
        z = t.backbone.stem[0](t.backbone.standardize(x))
    # momentum None: a cumulative average of the batch means (16, 16, 8 faces: equal weight per batch)
    means = torch.stack([z[i : i + 16].mean(dim=(0, 2, 3)) for i in range(0, 40, 16)]).mean(0)
    assert torch.allclose(stem_bn.running_mean, means, atol=1e-4)
    assert stem_bn.momentum == 0.1 and not t.backbone.training  # settings restored
    for k, v in t.backbone.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k  # no weight moves


def test_float16_storage_gives_nearly_the_same_model_input():
    x = FrequencyMasking(upsample=4)(_images(4, 1, 32).float())
    mean, std = channel_stats(x)
    mean16, std16 = channel_stats(x.half())
    assert torch.allclose(mean, mean16, atol=1e-3) and torch.allclose(std, std16, rtol=1e-2)
    rel = ((x.half().float() - x).abs() / std.view(1, -1, 1, 1)).max()
    assert rel < 5e-3


def test_recipes_by_data():
    assert default_recipe("synthetic") == "small" and default_recipe("/data/lfw/lfw.npz") == "real"
    assert get_recipe("real").backbone == "resnet" and get_recipe("real").upsample == 4
    assert get_recipe("real").replace(lr=None, epochs=3).epochs == 3  # None leaves a setting as it is
    assert get_recipe("real").replace(backbone="grid").upsample == 1  # the older backbones take 8x8-block maps
    assert get_recipe("real").replace(backbone="grid", upsample=2).upsample == 2


def test_mixing_the_upsampled_channels_keeps_soft_labels():
    m = FrequencyMasking(upsample=4)
    x = m(_images(6, 1, 16).float())
    y = torch.arange(6) % 3
    r = mix_batch(x, y, 2, 3, 1.0, torch.Generator().manual_seed(0))
    assert r.inputs.shape == x.shape
    assert torch.allclose(r.soft_labels.sum(1), torch.ones(6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
def test_the_new_models_train_on_cuda():
    m = FrequencyMasking(upsample=4).cuda()
    x = m(torch.rand(8, 1, 64, 64, device="cuda"))
    for stem, inputs in (("frequency", x), ("pixel", torch.rand(8, 1, 64, 64, device="cuda"))):
        cfg = FRConfig(inputs.shape[1], tuple(inputs.shape[-2:]), 4, embedding_dim=32, backbone="resnet",
                       widths=(16, 32, 32, 64), stem=stem, upsample=4, head="cosface", lr_schedule="cosine")
        t = FRTrainer(cfg, device="cuda", seed=0)
        t.total_updates = 3
        y = torch.arange(8, device="cuda") % 4
        for _ in range(3):
            losses = t.train_step(inputs, y)
        assert losses.device.type == "cuda" and t.updates == 3 and t.last_fault is None
        t.recalibrate_norms(inputs)
        assert 0.0 <= t.accuracy(inputs, y) <= 1.0
