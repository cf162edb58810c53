"""fr_models.dp (DP-SGD through Opacus) and the soft-label heads it and negative label smoothing rely on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fr_models import FRConfig, FRTrainer, make_backbone
from fr_models.dp import fit_dp
from fr_models.heads import SoftmaxHead, targets_as_components


def test_soft_labels_with_negative_entries_give_the_soft_cross_entropy():
    head = SoftmaxHead(8, 5)
    emb = torch.randn(6, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    t = 1.05 * nn.functional.one_hot(y, 5).float() - 0.05 / 5
    expected = -(t * torch.log_softmax(head.logits(emb), 1)).sum(1)
    assert torch.allclose(head(emb, t), expected, atol=1e-5)
    # a sparse row with a negative entry keeps it (by magnitude), not only the positive ones
    sparse = torch.zeros(1, 5)
    sparse[0, 1], sparse[0, 3] = 1.2, -0.2
    classes, weights = targets_as_components(sparse, 5)
    assert sorted(classes[0].tolist()) == [1, 3] and sorted(weights[0].tolist()) == pytest.approx([-0.2, 1.2])


def test_group_norm_backbone_has_no_batch_statistics_and_round_trips(tmp_path):
    bb = make_backbone("grid", 6, (4, 4), 16, (8, 8), norm="group")
    kinds = {type(m) for m in bb.modules()}
    assert nn.GroupNorm in kinds and not kinds & {nn.BatchNorm1d, nn.BatchNorm2d}
    assert not any(m.inplace for m in bb.modules() if isinstance(m, nn.ReLU))
    bb.eval()
    x = torch.randn(3, 6, 4, 4)
    assert torch.allclose(bb(x)[:1], bb(x[:1]), atol=1e-5)  # per-sample: no sample sees another
    t = FRTrainer(FRConfig(6, (4, 4), 3, embedding_dim=16, widths=(8, 8), norm="group"), seed=0)
    t.save(tmp_path / "g.pt")
    back = FRTrainer.load(tmp_path / "g.pt")
    assert back.config.norm == "group" and isinstance(back.backbone.features[0][1], nn.GroupNorm)
    with pytest.raises(ValueError, match="unknown norm 'layer'; accepted: batch, group"):
        make_backbone("grid", 6, (4, 4), 16, norm="layer")


def test_opacus_per_sample_gradients_match_autograd_on_the_group_norm_model():
    from opacus import GradSampleModule

    from fr_models.dp import _Loss

    t = FRTrainer(FRConfig(6, (4, 4), 4, embedding_dim=16, widths=(8, 8), norm="group"), seed=0)
    module = GradSampleModule(_Loss(t), loss_reduction="mean")
    x, y = torch.randn(16, 6, 4, 4, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 4
    module(x, y).mean().backward()
    # the mean of the per-sample gradients is the batch gradient (wrong on channels-last convolutions)
    for name, p in module.named_parameters():
        assert torch.allclose(p.grad_sample.mean(0), p.grad, atol=1e-6), name


def _dp_data():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(96, 6, 4, 4, generator=g) + 2 * nn.functional.one_hot(y, 6).float().view(96, 6, 1, 1)
    return x, y


def _dp_trainer(norm: str = "group", lr: float = 1e-3) -> FRTrainer:
    return FRTrainer(FRConfig(6, (4, 4), 4, embedding_dim=16, widths=(8, 8), norm=norm, lr=lr), seed=0)


def test_fit_dp_is_deterministic_accounts_privacy_and_leaves_a_plain_model():
    x, y = _dp_data()
    a, b = _dp_trainer(), _dp_trainer()
    ra = fit_dp(a, x, y, epochs=2, batch_size=16, seed=3, noise_multiplier=1.0)
    rb = fit_dp(b, x, y, epochs=2, batch_size=16, seed=3, noise_multiplier=1.0)
    assert all(torch.equal(p, q) for p, q in zip(a.backbone.state_dict().values(), b.backbone.state_dict().values()))
    assert ra["epsilon"] == rb["epsilon"] > 0 and ra["sample_rate"] == pytest.approx(16 / 96)
    assert 10 <= ra["updates"] <= 12  # 2 epochs of 96 // 16 Poisson batches (an empty one is skipped)
    more = fit_dp(_dp_trainer(), x, y, epochs=4, batch_size=16, seed=3, noise_multiplier=1.0)
    noisier = fit_dp(_dp_trainer(), x, y, epochs=2, batch_size=16, seed=3, noise_multiplier=3.0)
    assert more["epsilon"] > ra["epsilon"] > noisier["epsilon"]  # longer training spends more, more noise less
    # Opacus's hooks are gone: no per-sample gradient buffers, and the plain training step works again
    assert not any(hasattr(p, "grad_sample") for p in a.backbone.parameters())
    assert torch.isfinite(a.train_step(x[:8], y[:8])).all()


def test_fit_dp_with_negligible_noise_learns_and_refuses_batch_norm():
    x, y = _dp_data()
    t = _dp_trainer(lr=1e-2)
    before = t.accuracy(x, y)
    r = fit_dp(t, x, y, epochs=10, batch_size=16, noise_multiplier=1e-3, max_grad_norm=10.0)
    assert t.accuracy(x, y) > max(before, 0.6) and r["epoch_losses"][-1] < r["epoch_losses"][0]
    with pytest.raises(ValueError, match="without batch norm.*norm='group'"):
        fit_dp(_dp_trainer("batch"), x, y, epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="noise_multiplier > 0"):
        fit_dp(t, x, y, epochs=1, batch_size=16, noise_multiplier=0.0)


@pytest.mark.parametrize("head", ["cosface", "arcface"])
def test_margin_heads_train_under_dp_sgd_with_exact_per_sample_gradients(head):
    """The real recipe's CosFace head: its centres sit in a one-input module, so Opacus sees per-sample gradients."""
    from opacus import GradSampleModule

    from fr_models.dp import _Loss

    x, y = _dp_data()
    cfg = FRConfig(6, (4, 4), 4, embedding_dim=16, widths=(8, 8), norm="group", head=head, lr=1e-2)
    module = GradSampleModule(_Loss(FRTrainer(cfg, seed=0)), loss_reduction="mean")
    module(x[:16], y[:16]).mean().backward()
    for name, p in module.named_parameters():  # the class centres included
        assert torch.allclose(p.grad_sample.mean(0), p.grad, atol=1e-6), name
    assert any(name.endswith("head.classifier.weight") for name, _ in module.named_parameters())
    t = FRTrainer(cfg, seed=0)
    before = t.accuracy(x, y)
    r = fit_dp(t, x, y, epochs=10, batch_size=16, noise_multiplier=1e-3, max_grad_norm=10.0)
    assert t.accuracy(x, y) > max(before, 0.6) and r["epoch_losses"][-1] < r["epoch_losses"][0]


def test_margin_head_checkpoints_from_before_the_classifier_module_still_load():
    from fr_models.heads import CosFaceHead

    head = CosFaceHead(8, 3)
    old = {"weight": torch.randn(3, 8)}  # how a margin head's centres were named before
    head.load_state_dict(old)
    assert torch.equal(head.weight, old["weight"]) and head.weight is head.classifier.weight
    assert list(head.state_dict()) == ["classifier.weight"]
    with pytest.raises(RuntimeError, match="size mismatch"):
        head.load_state_dict({"weight": torch.randn(4, 8)})
