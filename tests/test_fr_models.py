import math

import numpy as np
import pytest
import torch

from fr_models import (
    ArcFaceHead,
    FRConfig,
    FRTrainer,
    SoftmaxHead,
    UnblockBackbone,
    images_to_tensor,
    load_faces,
    make_backbone,
    make_head,
    split_per_identity,
)
from fr_models.training import fit
from mixup_env.transform import FrequencyMasking


@pytest.mark.parametrize("name,widths", [("grid", (8, 16)), ("unblock", (4, 8, 8, 16))])
def test_backbones_return_unit_embeddings(name, widths):
    bb = make_backbone(name, 54, (8, 8), 32, widths)
    z = bb(torch.randn(5, 54, 8, 8) * 100)
    assert z.shape == (5, 32)
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    with pytest.raises(ValueError, match=r"expected input \(N, 54, 8, 8\)"):
        bb(torch.randn(5, 54, 14, 14))
    with pytest.raises(ValueError, match="known backbones: grid, pixel, resnet, unblock"):
        make_backbone("iresnet", 54, (8, 8), 32)
    with pytest.raises(ValueError, match="4 widths"):
        UnblockBackbone(54, (8, 8), 32, (8, 16))


@pytest.mark.parametrize("head", [ArcFaceHead(16, 7), SoftmaxHead(16, 7)])
def test_soft_label_loss_is_the_weighted_mean_of_hard_losses(head):
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    y = torch.tensor([0, 3, 6, 2])
    onehot = torch.nn.functional.one_hot(y, 7).float()
    assert torch.allclose(head(emb, onehot), head(emb, y), atol=1e-5)
    # a 0.7/0.3 mix of classes a and b: 0.7 * loss(a) + 0.3 * loss(b), each with its own margin
    a, b = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 0, 1])
    soft = 0.7 * torch.nn.functional.one_hot(a, 7).float() + 0.3 * torch.nn.functional.one_hot(b, 7).float()
    assert torch.allclose(head(emb, soft), 0.7 * head(emb, a) + 0.3 * head(emb, b), atol=1e-5)
    with pytest.raises(ValueError, match=r"soft labels of shape \(4, 7\)"):
        head(emb, torch.rand(4, 3))


def test_softmax_head_soft_loss_is_soft_cross_entropy():
    head = SoftmaxHead(8, 5)
    emb, t = torch.randn(6, 8), torch.softmax(torch.randn(6, 5), 1)
    expect = -(t * torch.log_softmax(head.logits(emb), 1)).sum(1)
    assert torch.allclose(head(emb, t), expect, atol=1e-5)


def test_arcface_margin_and_guard():
    head = ArcFaceHead(2, 2, scale=1.0, margin=0.5)
    theta = torch.linspace(0.01, math.pi, 200)
    target = head.target_logits(torch.cos(theta))
    # inside the valid range: cos(theta + m); past theta + m > pi: cos(theta) - m sin(m), still decreasing
    inside = theta + 0.5 <= math.pi - 1e-3
    assert torch.allclose(target[inside], torch.cos(theta[inside] + 0.5), atol=1e-4)
    assert torch.allclose(target[~inside], torch.cos(theta[~inside]) - 0.5 * math.sin(0.5), atol=1e-4)
    assert (target.diff() < 0).all()
    with pytest.raises(ValueError, match="known heads: arcface, cosface, softmax"):
        make_head("sphereface", 8, 3)


def small_problem():
    faces = load_faces(None)
    tr, te = split_per_identity(faces.labels, 0.2, seed=0)
    x = FrequencyMasking()(images_to_tensor(faces.images))
    y = torch.from_numpy(faces.labels)
    return x, y, tr, te, faces.num_classes


@pytest.mark.parametrize("head", ["softmax", "arcface"])
def test_accuracy_rises_above_chance_without_mixing(head):
    x, y, tr, te, c = small_problem()
    trainer = FRTrainer(FRConfig(x.shape[1], (8, 8), c, embedding_dim=64, head=head), seed=0)
    trainer.backbone.set_input_stats(x[tr].mean((0, 2, 3)), x[tr].std((0, 2, 3)))
    before = trainer.accuracy(x[te], y[te])
    rng = np.random.default_rng(0)
    first = None
    for _ in range(150):
        idx = torch.from_numpy(rng.choice(tr, 64, replace=False))
        loss = float(trainer.train_step(x[idx], y[idx]).mean())
        first = loss if first is None else first
    after = trainer.accuracy(x[te], y[te])
    assert loss < 0.75 * first
    assert after >= 2.5 / c, f"accuracy {after:.3f} not clearly above chance {1 / c:.3f} (before: {before:.3f})"


def test_trainer_checkpoint_round_trip(tmp_path):
    x = torch.randn(8, 54, 8, 8)
    y = torch.arange(8) % 4
    t = FRTrainer(FRConfig(54, (8, 8), 4, embedding_dim=16, widths=(8, 8)), seed=1)
    t.train_step(x, y)
    path = t.save(tmp_path / "sub" / "fr.pt")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    u = FRTrainer.load(path)
    assert u.updates == 1 and u.config == t.config
    assert torch.equal(u.losses(x, y), t.losses(x, y))
    # the optimiser state travels too: the next update is identical
    assert torch.equal(u.train_step(x, y), t.train_step(x, y))
    assert torch.equal(u.losses(x, y), t.losses(x, y))


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = FRTrainer(FRConfig(10, (2, 2), 3, embedding_dim=8, widths=(4, 4)), seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = FRTrainer(FRConfig(10, (2, 2), 3, embedding_dim=8, widths=(4, 4)), seed=5)
    for p, q in zip(a.backbone.parameters(), b.backbone.parameters()):
        assert torch.equal(p, q)


def test_non_finite_loss_skips_the_update():
    t = FRTrainer(FRConfig(10, (2, 2), 3, embedding_dim=8, widths=(4, 4)), seed=0)
    before = [p.clone() for p in t.backbone.parameters()]
    x = torch.full((4, 10, 2, 2), float("nan"))
    losses = t.train_step(x, torch.tensor([0, 1, 2, 0]))
    assert not torch.isfinite(losses).all()
    assert t.skipped_updates == 1 and t.updates == 0
    for p, q in zip(before, t.backbone.parameters()):
        assert torch.equal(p, q)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from fr_models import atomic_write

    target = tmp_path / "model.zip"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"old"))

    def crash(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]


def test_cosface_margin_and_pixel_backbone():
    from fr_models import CosFaceHead, PixelBackbone

    head = CosFaceHead(4, 3, scale=10.0, margin=0.35)
    logits = torch.tensor([[5.0, 1.0, -2.0]])
    assert torch.allclose(head.target_logits(logits), logits - 3.5)
    emb = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    y = torch.tensor([0, 2])
    manual = torch.nn.functional.cross_entropy(head.logits(emb).scatter_add(1, y[:, None], torch.full((2, 1), -3.5)),
                                               y, reduction="none")
    assert torch.allclose(head(emb, y), manual, atol=1e-5)
    bb = make_backbone("pixel", 1, (64, 64), 32)
    assert isinstance(bb, PixelBackbone)
    z = bb(torch.rand(3, 1, 64, 64))
    assert z.shape == (3, 32) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 16"):
        PixelBackbone(1, (40, 40))
    pixel_params = sum(p.numel() for p in bb.parameters())
    unblock_params = sum(p.numel() for p in make_backbone("unblock", 54, (8, 8), 32).parameters())
    assert 0.5 < pixel_params / unblock_params < 2.0  # comparable capacity


@pytest.mark.parametrize("name,channels,size", [("pixel", 1, (112, 112)), ("unblock", 54, (14, 14)),
                                                ("grid", 54, (14, 14)), ("pixel", 3, (64, 64))])
def test_backbones_at_112_and_in_colour(name, channels, size):
    bb = make_backbone(name, channels, size, 16)
    assert bb(torch.rand(2, channels, *size)).shape == (2, 16)


def test_fit_trains_mixes_flips_and_rejects_bad_sizes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, 2, 2, generator=g)
    y = torch.arange(40) % 4
    x = x + 3 * torch.nn.functional.one_hot(y, 6).float().view(40, 6, 1, 1)  # learnable
    t = FRTrainer(FRConfig(6, (2, 2), 4, embedding_dim=8, widths=(8, 8)), seed=0)
    calls = {"mix": 0, "flip": 0}

    def mix(xb, yb, gen):
        calls["mix"] += 1
        return xb, torch.nn.functional.one_hot(yb, 4).float()

    def flip(xb):
        calls["flip"] += len(xb)
        return xb.flip(-1)

    hist = fit(t, x, y, epochs=3, batch_size=16, mix=mix, flip=flip)
    # 2 full batches per epoch; the 40 faces are mirrored once (fr_models.training.FlipDraw), not per batch
    assert hist["updates"] == 6 and calls == {"mix": 6, "flip": 40}
    assert len(hist["epoch_seconds"]) == 3 and hist["epoch_losses"][-1] < hist["epoch_losses"][0]
    with pytest.raises(ValueError, match="batch_size <= 40"):
        fit(t, x, y, epochs=1, batch_size=64)


def test_flip_draw_equals_random_flip_bit_for_bit() -> None:
    from fr_models.training import FlipDraw, random_flip
    from mixup_env.transform import ChannelMask, FrequencyMasking

    masking = FrequencyMasking(ChannelMask((0, 1, 8)), upsample=1)
    faces = masking(torch.rand(20, 1, 32, 32)).half()  # stored as the env stores them
    idx = torch.tensor([3, 7, 7, 0, 19, 12, 5, 8])
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    drawn = FlipDraw(faces, masking.hflip)(idx, a)
    expected = random_flip(faces[idx].float(), masking.hflip, b)
    assert drawn.dtype == torch.float32 and torch.equal(drawn, expected)
    assert not torch.equal(drawn, faces[idx].float())  # some faces were mirrored
    assert a.random() == b.random()  # the same draws were made
    c = np.random.default_rng(4)
    plain = FlipDraw(faces, None)(idx, c)
    assert torch.equal(plain, faces[idx].float()) and c.random() == np.random.default_rng(4).random()
