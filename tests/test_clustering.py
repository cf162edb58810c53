"""The Carlini-style data-level attack (privacy.attacks.clustering) on mixes whose sources are known."""

import pytest
import torch
from torch import nn

from privacy.attacks.clustering import cluster_encodings, expected_dominant_weight
from privacy.attacks.datalevel import defence_mix, observe_mixes, training_mixes


def _attack(k: int, faces: torch.Tensor, mean: torch.Tensor, epochs: int = 20):
    mix = defence_mix([k])

    def stream():
        return ((m, d) for m, d, _ in training_mixes(faces, nn.Identity(), mix, 30, epochs, 0))

    res = cluster_encodings(stream, len(faces), mean, expected_dominant_weight(mix), dims=64, iters=20)
    n = len(res.majority)
    true = faces[res.majority].reshape(n, -1) - mean.reshape(1, -1)
    est = res.restored.reshape(n, -1) - mean.reshape(1, -1)
    cos = float(torch.nn.functional.cosine_similarity(true, est).mean())
    nearest = torch.cdist(res.restored.reshape(n, -1), faces.reshape(len(faces), -1)).argmin(1)
    return res, cos, float((nearest == res.majority).float().mean())


def test_clustering_recovers_the_sources_of_many_mixes_and_degrades_as_k_grows():
    g = torch.Generator().manual_seed(0)
    faces, public = torch.rand(60, 16, 4, 4, generator=g), torch.rand(200, 16, 4, 4, generator=g)
    mean = public.mean(0)
    one, cos1, near1 = _attack(1, faces, mean)
    assert one.purity.min() == 1.0 and cos1 > 0.999 and near1 == 1.0  # k = 1: every encoding is its face
    two, cos2, near2 = _attack(2, faces, mean)
    six, cos6, near6 = _attack(6, faces, mean)
    assert float(two.purity.mean()) > 0.85 and cos2 > 0.93 and near2 > 0.9
    assert float(six.purity.mean()) < float(two.purity.mean()) and cos6 < cos2
    assert len(two.majority.unique()) > 45  # most faces are found (each cluster one face)
    assert int(two.sizes.sum()) == 20 * 60  # every encoding of the 20 observed passes was clustered
    # fewer observed passes, less to average over: a worse restoration
    _, cos2_few, _ = _attack(2, faces, mean, epochs=3)
    assert cos2_few < cos2


def test_training_mixes_repeat_and_agree_with_observe_mixes():
    g = torch.Generator().manual_seed(1)
    faces = torch.rand(50, 4, 2, 2, generator=g)
    mix = defence_mix([3])
    a = [m for m, _, _ in training_mixes(faces, nn.Identity(), mix, 16, 2, 5)]
    b = [m for m, _, _ in training_mixes(faces, nn.Identity(), mix, 16, 2, 5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    observed, dominant, weight = observe_mixes(faces, nn.Identity(), mix, 16, 2, 5)
    assert torch.equal(observed, torch.cat(a)) and len(dominant) == len(weight) == len(observed) == 100
    assert 1 / 3 <= float(weight.min()) and float(weight.max()) <= 1
    assert expected_dominant_weight(defence_mix([1])) == 1.0
    assert 0.7 < expected_dominant_weight(defence_mix([2])) < 0.8  # E[max(u, 1 - u)] = 0.75


def test_clustering_refuses_bad_input():
    faces = torch.rand(10, 4, 2, 2)
    mix = defence_mix([2])

    def stream():
        return ((m, d) for m, d, _ in training_mixes(faces, nn.Identity(), mix, 5, 1, 0))

    with pytest.raises(ValueError, match="cannot form 20 clusters: observe more epochs"):
        cluster_encodings(stream, 20, faces.mean(0), 0.75)
    with pytest.raises(ValueError, match="0 < dominant_weight <= 1"):
        cluster_encodings(stream, 5, faces.mean(0), 0.0)
    calls = []

    def changing():
        calls.append(1)
        n = 2 if len(calls) > 1 else 1
        return ((m, d) for m, d, _ in training_mixes(faces, nn.Identity(), mix, 5, n, 0))

    with pytest.raises(ValueError, match="the encodings changed between passes"):
        cluster_encodings(changing, 5, faces.mean(0), 0.75)
