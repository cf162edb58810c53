"""Tests of fr_models.evaluation: identification, verification metrics (LFW protocol) and embedding extraction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fr_models.evaluation import (
    VerificationResult,
    best_threshold,
    extract_embeddings,
    identification_accuracy,
    roc_auc,
    tar_at_far,
    verification_scores,
    verify_kfold,
)


def _lfw_like(rng: np.random.Generator, same_scores, diff_scores, n_folds: int = 10, per_fold: int = 300):
    """Pairs ordered as LFW's pairs.txt: per fold, ``per_fold`` same pairs then ``per_fold`` different pairs."""
    scores, same, folds = [], [], []
    for f in range(n_folds):
        scores += [same_scores(per_fold), diff_scores(per_fold)]
        same += [np.ones(per_fold, bool), np.zeros(per_fold, bool)]
        folds.append(np.full(2 * per_fold, f))
    return np.concatenate(scores), np.concatenate(same), np.concatenate(folds)


# ------------------------------------------------------------------------------------------ verification: k-fold


def test_perfectly_separable_scores():
    rng = np.random.default_rng(0)
    scores, same, folds = _lfw_like(
        rng, lambda n: 0.9 + 0.02 * rng.standard_normal(n), lambda n: 0.1 + 0.02 * rng.standard_normal(n)
    )
    res = verify_kfold(scores, same, folds)
    assert res.fold_accuracies == [1.0] * 10
    assert res.accuracy_mean == 1.0 and res.accuracy_std == 0.0
    assert res.roc_auc == 1.0
    assert res.tar_at_far == {1e-2: 1.0, 1e-3: 1.0}
    assert (res.num_pairs, res.num_same, res.num_diff) == (6000, 3000, 3000)
    assert all(0.2 < t < 0.8 for t in res.thresholds)
    # Contiguous folds (folds=None) are the same split here.
    assert verify_kfold(scores, same).fold_accuracies == res.fold_accuracies


def test_random_scores_are_at_chance():
    rng = np.random.default_rng(1)
    scores, same, folds = _lfw_like(rng, lambda n: rng.uniform(size=n), lambda n: rng.uniform(size=n))
    res = verify_kfold(scores, same, folds)
    assert len(res.fold_accuracies) == 10 and len(res.thresholds) == 10
    assert abs(res.accuracy_mean - 0.5) < 0.05
    assert abs(res.roc_auc - 0.5) < 0.03
    assert res.accuracy_std == pytest.approx(np.std(res.fold_accuracies))
    for tar in res.tar_at_far.values():
        assert tar < 0.05


def test_reversed_scores_cannot_flip():
    rng = np.random.default_rng(2)
    scores, same, folds = _lfw_like(
        rng, lambda n: 0.1 + 0.02 * rng.standard_normal(n), lambda n: 0.9 + 0.02 * rng.standard_normal(n)
    )
    res = verify_kfold(scores, same, folds)
    assert res.roc_auc == 0.0
    # "same iff score > t" cannot be inverted: the best learned threshold is accept-all (just below the smallest
    # training score), which gives 0.5 on a balanced held-out fold (less a held-out same pair below that minimum).
    assert res.accuracy_mean <= 0.55
    assert abs(res.accuracy_mean - 0.5) < 0.01
    assert all(t < scores[folds != f].min() for f, t in enumerate(res.thresholds))
    assert res.tar_at_far == {1e-2: 0.0, 1e-3: 0.0}


def test_contiguous_folds_uneven_sizes():
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6])
    same = np.array([1, 0, 1, 0, 1, 0, 1])
    res = verify_kfold(scores, same, n_folds=3, fars=())
    assert len(res.fold_accuracies) == 3 and res.accuracy_mean == 1.0
    assert res.tar_at_far == {}


def test_as_dict_is_json_serialisable():
    rng = np.random.default_rng(3)
    scores, same, folds = _lfw_like(rng, lambda n: rng.uniform(size=n), lambda n: rng.uniform(size=n), per_fold=20)
    res = verify_kfold(scores, same, folds, fars=(1e-2, 1e-3, 1e-5))
    assert isinstance(res, VerificationResult)
    d = json.loads(json.dumps(res.as_dict()))
    assert set(d["tar_at_far"]) == {"0.01", "0.001", "1e-05"}
    assert {float(k) for k in d["tar_at_far"]} == {1e-2, 1e-3, 1e-5}
    assert d["num_pairs"] == 400 and d["fold_accuracies"] == res.fold_accuracies


# --------------------------------------------------------------------------------- verification: hand-computed


def test_roc_auc_hand_computed():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    # same {0.5, 0.9} vs different {0.2, 0.5}: 1 + 1/2 (tie) + 1 + 1 out of 4.
    assert roc_auc(np.array([0.2, 0.5, 0.5, 0.9]), np.array([False, True, False, True])) == pytest.approx(0.875)
    assert roc_auc(np.array([0.3, 0.3]), np.array([True, False])) == pytest.approx(0.5)


def test_tar_at_far_hand_computed():
    impostors = np.arange(1, 11) / 10  # 0.1 .. 1.0
    genuine = np.array([0.55, 0.65, 0.75, 0.85, 0.95])
    scores = np.concatenate([impostors, genuine])
    same = np.concatenate([np.zeros(10, bool), np.ones(5, bool)])
    assert tar_at_far(scores, same, 0.1) == pytest.approx(0.2)  # 1 impostor allowed: t = 0.9
    assert tar_at_far(scores, same, 0.3) == pytest.approx(0.6)  # 3 allowed: t = 0.7
    # Fewer impostors (10) than 1/far: FAR 0, t = max impostor score = 1.0.
    assert tar_at_far(scores, same, 0.01) == 0.0
    assert tar_at_far(scores, same, 0.0) == 0.0
    assert tar_at_far(scores, same, 1.0) == 1.0
    # Ties among impostors: {0.5, 0.5, 0.3}, 1 allowed -> t = 0.5 (strict ">"), genuine {0.5, 0.6}.
    assert tar_at_far(np.array([0.5, 0.5, 0.3, 0.5, 0.6]), np.array([0, 0, 0, 1, 1]), 1 / 3) == pytest.approx(0.5)
    # far * n just under an integer in floating point (0.29 * 100) still allows 29 impostors.
    imp = np.arange(100) / 100  # 0.00 .. 0.99; 29 allowed -> t = 0.70
    s2 = np.concatenate([imp, [0.705, 0.695]])
    y2 = np.concatenate([np.zeros(100, bool), [True, True]])
    assert tar_at_far(s2, y2, 0.29) == pytest.approx(0.5)


def test_best_threshold_hand_computed():
    t, acc = best_threshold(np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.35]), np.array([0, 0, 0, 1, 1, 1]))
    assert t == pytest.approx(0.325) and acc == 1.0
    # Two candidates tie at 3/4 (0.2 and 0.6): the smallest is returned.
    t, acc = best_threshold(np.array([0.1, 0.3, 0.4, 0.8]), np.array([0, 1, 0, 1]))
    assert t == pytest.approx(0.2) and acc == 0.75
    # Extremes: all same -> accept all (threshold below the smallest score); all different -> reject all.
    t, acc = best_threshold(np.array([0.4, 0.6]), np.array([1, 1]))
    assert t < 0.4 and acc == 1.0
    t, acc = best_threshold(np.array([0.4, 0.6]), np.array([0, 0]))
    assert t == 0.6 and acc == 1.0
    # Adjacent floats: the threshold still separates them.
    lo = 0.5
    hi = float(np.nextafter(lo, 1.0))
    t, acc = best_threshold(np.array([lo, hi]), np.array([0, 1]))
    assert lo <= t < hi and acc == 1.0


def test_verification_scores_cosine():
    a = torch.tensor([[1.0, 0.0], [3.0, 4.0], [1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [-3.0, -4.0], [0.0, 5.0], [1.0, 0.0]])
    s = verification_scores(a, b)
    assert s.shape == (4,) and s.dtype == np.float64
    np.testing.assert_allclose(s, [1.0, -1.0, np.sqrt(0.5), 0.0], atol=1e-7)
    np.testing.assert_allclose(verification_scores(a.numpy(), b.numpy()), s)


# ---------------------------------------------------------------------------------------------- identification


def test_identification_accuracy_constructed():
    # 6 classes; the true class ranks 0, 2, 4 and 5 (last) in the four rows.
    logits = torch.tensor(
        [
            [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # label 0, rank 0
            [9.0, 8.0, 7.0, 1.0, 2.0, 3.0],  # label 2, rank 2
            [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 4, rank 4
            [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 5, rank 5
        ]
    )
    labels = torch.tensor([0, 2, 4, 5])
    assert identification_accuracy(logits, labels) == {"top1": 0.25, "top5": 0.75}
    assert identification_accuracy(logits.numpy(), [0, 2, 4, 5], topk=(1, 2, 3, 6)) == {
        "top1": 0.25,
        "top2": 0.25,
        "top3": 0.5,
        "top6": 1.0,
    }
    # Top-1 is argmax accuracy, ties broken by the lower index as in argmax.
    assert identification_accuracy(np.zeros((2, 4)), np.array([0, 1]), topk=(1, 2)) == {"top1": 0.5, "top2": 1.0}


def test_identification_topk_clipped_to_num_classes():
    logits = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = np.array([2, 0, 0])
    assert identification_accuracy(logits, labels, topk=(1, 5)) == {"top1": pytest.approx(1 / 3), "top5": 1.0}


# -------------------------------------------------------------------------------------------- extract_embeddings


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 4))


def test_extract_embeddings_batches_match_one_pass_and_mode_restored():
    net = _net()
    x = torch.randn(10, 5)
    net.train()
    stats = net[1].running_mean.clone()
    small = extract_embeddings(net, x, batch_size=3, progress=True)
    assert net.training and all(m.training for m in net.modules())
    full = extract_embeddings(net, x, batch_size=256)
    assert small.shape == (10, 4) and small.device.type == "cpu" and not small.requires_grad
    torch.testing.assert_close(small, full)
    torch.testing.assert_close(net[1].running_mean, stats)  # eval mode: running statistics untouched
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(full, net(x))
    # Eval mode stays eval; a mixed state is restored module by module.
    extract_embeddings(net, x, batch_size=4, device="cpu")
    assert not any(m.training for m in net.modules())
    net[2].train()
    extract_embeddings(net, x, batch_size=4)
    assert [m.training for m in net.modules()] == [False, False, False, True, False]


def test_extract_embeddings_plain_callable_and_restore_on_error():
    x = torch.arange(12.0).reshape(6, 2)
    torch.testing.assert_close(extract_embeddings(lambda b: 2 * b, x, batch_size=4), 2 * x)

    class Boom(nn.Module):
        def forward(self, b: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    boom = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_embeddings(boom, x)
    assert boom.training


def test_extract_embeddings_flip_test_sums_normalised_embeddings():
    x = torch.tensor([[1.0, 2.0, 4.0], [3.0, 0.0, 0.0]])
    # a model that is not mirror-symmetric: the flip test is the sum of the two unit embeddings
    out = extract_embeddings(lambda b: b * torch.tensor([1.0, 2.0, 3.0]), x, flip=lambda b: b.flip(-1))
    a = torch.tensor([[1.0, 4.0, 12.0], [3.0, 0.0, 0.0]])
    b = torch.tensor([[4.0, 4.0, 3.0], [0.0, 0.0, 9.0]])
    torch.testing.assert_close(out, a / a.norm(dim=1, keepdim=True) + b / b.norm(dim=1, keepdim=True))
    # a face and its mirror image get the same flip-test embedding (a real FR backbone, masked DCT input)
    from fr_models.backbones import make_backbone
    from mixup_env.transform import ChannelMask, FrequencyMasking

    masking = FrequencyMasking(ChannelMask(), upsample=2)
    torch.manual_seed(0)
    faces = masking(torch.rand(3, 1, 32, 32))
    net = make_backbone("resnet", faces.shape[1], (faces.shape[2], faces.shape[3]), 16, widths=(8, 8, 8, 16),
                        stem="frequency", upsample=2)
    e, e_mirror = (extract_embeddings(net, f, flip=masking.hflip) for f in (faces, masking.hflip(faces)))
    torch.testing.assert_close(e, e_mirror, rtol=1e-4, atol=1e-5)
    plain = extract_embeddings(net, faces)
    assert not torch.allclose(plain, extract_embeddings(net, masking.hflip(faces)), atol=1e-3)
    with pytest.raises(TypeError, match="flip must be a callable"):
        extract_embeddings(net, faces, flip="hflip")


# ------------------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        extract_embeddings(_net(), torch.empty(0, 5))
    with pytest.raises(ValueError, match="batch_size"):
        extract_embeddings(_net(), torch.randn(3, 5), batch_size=0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        extract_embeddings(_net(), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="returned shape"):
        extract_embeddings(lambda b: b[:1], torch.randn(3, 5))

    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        identification_accuracy(np.zeros((3, 4)), [0, 1])
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        identification_accuracy(np.zeros((2, 4)), [0, 4])
    with pytest.raises(ValueError, match="2-D"):
        identification_accuracy(np.zeros(4), [0])
    with pytest.raises(ValueError, match="positive integer"):
        identification_accuracy(np.zeros((2, 4)), [0, 1], topk=(0,))

    s = np.array([0.1, 0.9, 0.5, 0.4])
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="same length, got 4 and 3"):
        verify_kfold(s, y[:3], n_folds=2)
    with pytest.raises(ValueError, match="scores and folds must have the same length, got 4 and 3"):
        verify_kfold(s, y, folds=np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="boolean-like"):
        roc_auc(s, np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="at least one same and one different"):
        roc_auc(s, np.ones(4, bool))
    with pytest.raises(ValueError, match="at least one same and one different"):
        tar_at_far(s, np.zeros(4), 0.1)
    with pytest.raises(ValueError, match="at least 2 folds"):
        verify_kfold(s, y, folds=np.zeros(4))
    with pytest.raises(ValueError, match="n_folds"):
        verify_kfold(s, y, n_folds=1)
    with pytest.raises(ValueError, match="empty folds"):
        verify_kfold(s, y, n_folds=5)
    with pytest.raises(ValueError, match="finite"):
        best_threshold(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="non-empty"):
        best_threshold(np.array([]), np.array([], bool))
    with pytest.raises(ValueError, match=r"far must be in \[0, 1\]"):
        tar_at_far(s, y, 1.5)
    with pytest.raises(ValueError, match="same shape"):
        verification_scores(np.zeros((3, 4)), np.zeros((2, 4)))
