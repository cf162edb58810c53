"""Tests for fr_models.synthetic: the synthetic face stand-in data set."""

from __future__ import annotations

import numpy as np
import pytest

from fr_models.synthetic import make_synthetic_faces


@pytest.fixture(scope="module")
def default_faces() -> tuple[np.ndarray, np.ndarray]:
    """The default data set (20 identities x 20 images, 64x64)."""
    return make_synthetic_faces()


def _nearest_neighbour_accuracy(images: np.ndarray, labels: np.ndarray, per_identity: int) -> float:
    """1-NN accuracy on standardised raw pixels with a 50/50 split inside each identity.

    :param images: uint8 (N, H, W), ordered by identity.
    :param labels: int (N,).
    :param per_identity: images per identity.
    :return: accuracy on the test half.
    """
    x = images.reshape(len(images), -1).astype(np.float64)
    position = np.arange(len(images)) % per_identity
    train, test = position < per_identity // 2, position >= per_identity // 2
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
    z = (x - mean) / std
    a, b = z[test], z[train]
    dist = (a**2).sum(1)[:, None] - 2.0 * a @ b.T + (b**2).sum(1)[None, :]
    predicted = labels[train][dist.argmin(axis=1)]
    return float((predicted == labels[test]).mean())


def test_default_shapes_dtypes_and_labels(default_faces: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = default_faces
    assert images.shape == (400, 64, 64)
    assert images.dtype == np.uint8
    assert labels.shape == (400,)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.repeat(np.arange(20), 20))


@pytest.mark.parametrize(
    ("num_identities", "images_per_identity", "size"),
    [(3, 2, 112), (2, 1, 32), (4, 3, 40)],
)
def test_other_sizes_and_small_counts(num_identities: int, images_per_identity: int, size: int) -> None:
    images, labels = make_synthetic_faces(num_identities, images_per_identity, size=size, seed=5)
    n = num_identities * images_per_identity
    assert images.shape == (n, size, size)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.repeat(np.arange(num_identities), images_per_identity))
    assert labels.min() == 0 and labels.max() == num_identities - 1


def test_deterministic_and_seed_dependent(default_faces: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = default_faces
    again, labels_again = make_synthetic_faces()
    assert np.array_equal(images, again)
    assert np.array_equal(labels, labels_again)
    other, other_labels = make_synthetic_faces(seed=1)
    assert np.array_equal(labels, other_labels)
    assert not np.array_equal(images, other)
    # Not just a few pixels: most images change with the seed.
    changed = (images != other).reshape(len(images), -1).any(axis=1)
    assert changed.all()


def test_identities_and_images_do_not_depend_on_counts() -> None:
    small, _ = make_synthetic_faces(3, 4, size=32, seed=7)
    large, _ = make_synthetic_faces(5, 6, size=32, seed=7)
    large = large.reshape(5, 6, 32, 32)[:3, :4].reshape(12, 32, 32)
    assert np.array_equal(small, large)


def test_images_vary_within_identity_and_have_dynamic_range(
    default_faces: tuple[np.ndarray, np.ndarray],
) -> None:
    images, _ = default_faces
    flat = images.reshape(20, 20, -1)
    for identity in range(20):
        distinct = {image.tobytes() for image in flat[identity]}
        assert len(distinct) == 20, f"identity {identity} has duplicate images"
        # Not only distinct but clearly different (more than a few noisy pixels).
        diffs = np.abs(flat[identity, 1:].astype(np.int16) - flat[identity, :1]).mean(axis=1)
        assert diffs.min() > 3.0
    stds = images.reshape(len(images), -1).std(axis=1)
    assert stds.min() > 20.0
    assert images.min() < 30 and images.max() > 200


def test_images_look_like_faces(default_faces: tuple[np.ndarray, np.ndarray]) -> None:
    images = default_faces[0].astype(np.float64)
    # Dark background in the top corners, lighter head in the middle.
    corners = np.concatenate([images[:, :6, :6], images[:, :6, -6:]], axis=1).mean(axis=(1, 2))
    centre = images[:, 24:40, 24:40].mean(axis=(1, 2))
    assert (centre > corners + 40).all()
    # Eyes (upper half of the face) are darker than the cheeks below them.
    mean = images.mean(axis=0)
    eye_band = mean[26:32, 16:48].min()
    cheeks = mean[36:42, 18:28].mean()
    assert eye_band < cheeks - 30


def test_identity_is_learnable_but_not_trivial(default_faces: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = default_faces
    accuracy = _nearest_neighbour_accuracy(images, labels, per_identity=20)
    chance = 1.0 / 20
    assert accuracy > 3 * chance
    assert accuracy < 0.9


def test_identities_differ_more_than_noise(default_faces: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = default_faces
    per = images.reshape(20, 20, -1).astype(np.float64)
    half_a, half_b = per[:, ::2].mean(axis=1), per[:, 1::2].mean(axis=1)
    dist = np.sqrt(((half_a[:, None] - half_b[None]) ** 2).sum(axis=-1))
    within = np.diag(dist)
    between = dist[~np.eye(20, dtype=bool)]
    assert between.mean() > 1.5 * within.mean()
    # The mean of one half is nearest to the other half of the same identity.
    assert (dist.argmin(axis=1) == np.arange(20)).mean() >= 0.8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_identities": 1}, r"num_identities.*>= 2.*got 1"),
        ({"num_identities": 2.5}, r"num_identities.*got 2\.5"),
        ({"images_per_identity": 0}, r"images_per_identity.*>= 1.*got 0"),
        ({"size": 60}, r"size.*multiple of 8.*got 60"),
        ({"size": 24}, r"size.*>= 32.*got 24"),
        ({"size": -64}, r"size.*got -64"),
        ({"size": True}, r"size.*got True"),
        ({"seed": "0"}, r"seed.*int.*got '0'"),
        ({"seed": 1.0}, r"seed.*int.*got 1\.0"),
        ({"seed": -3}, r"seed.*non-negative.*got -3"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_synthetic_faces(**kwargs)  # type: ignore[arg-type]


def test_numpy_integer_arguments_are_accepted() -> None:
    images, labels = make_synthetic_faces(np.int64(2), np.int32(2), size=np.int64(32), seed=np.uint8(3))
    assert images.shape == (4, 32, 32)
    assert np.array_equal(images, make_synthetic_faces(2, 2, size=32, seed=3)[0])
