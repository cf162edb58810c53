import numpy as np
import pytest
import torch

from fr_models.data import FaceData, images_to_tensor, load_faces, load_npz, split_per_identity


def write_npz(path, n=12, size=16, classes=3, **extra):
    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 256, (n, size, size), dtype=np.uint8), "labels": np.arange(n) % classes}
    arrays.update(extra)
    np.savez(path, **arrays)
    return arrays


def test_npz_round_trip(tmp_path):
    arrays = write_npz(tmp_path / "f.npz", names=np.array(["a", "b", "c"]))
    faces = load_npz(tmp_path / "f.npz")
    assert np.array_equal(faces.images, arrays["images"]) and np.array_equal(faces.labels, arrays["labels"])
    assert faces.names == ["a", "b", "c"] and faces.num_classes == 3 and faces.image_shape == (16, 16)
    assert faces.labels.dtype == np.int64 and faces.planes == 1


def test_missing_empty_and_malformed_files_raise_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_npz(tmp_path / "empty.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"lacks the array\(s\) \['labels'\]"):
        load_npz(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "none.npz", images=np.zeros((0, 8, 8), np.uint8), labels=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="holds no images"):
        load_npz(tmp_path / "none.npz")
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 8, 8)), labels=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="must be uint8"):
        load_npz(tmp_path / "float.npz")
    np.savez(tmp_path / "mismatch.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"one per image"):
        load_npz(tmp_path / "mismatch.npz")


def test_load_faces_resolves_sources(tmp_path, monkeypatch):
    default = load_faces(None)
    assert default.source == "synthetic" and default.num_classes == 20 and default.image_shape == (64, 64)
    assert np.array_equal(load_faces("synthetic").images, default.images)
    (tmp_path / "tiny").mkdir()
    write_npz(tmp_path / "tiny" / "tiny.npz")
    monkeypatch.setenv("MIXUP_ENV_DATA", str(tmp_path))
    assert load_faces("tiny").source.endswith("tiny.npz")
    with pytest.raises(FileNotFoundError, match=r"no face data found for 'absent'.*accepted: 'synthetic'"):
        load_faces("absent")
    monkeypatch.delenv("MIXUP_ENV_DATA")
    with pytest.raises(FileNotFoundError, match="set MIXUP_ENV_DATA"):
        load_faces("tiny")


def test_images_to_tensor_and_resize():
    imgs = np.full((2, 16, 24), 255, np.uint8)
    x = images_to_tensor(imgs)
    assert x.shape == (2, 1, 16, 24) and x.dtype == torch.float32 and float(x.max()) == 1.0
    assert images_to_tensor(imgs, 8).shape == (2, 1, 8, 8)
    assert images_to_tensor(np.zeros((2, 16, 16, 3), np.uint8)).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="12x12 is not a multiple of 8"):
        images_to_tensor(imgs, 12)


def test_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(5), [1, 2, 10, 10, 20])
    tr, te = split_per_identity(labels, 0.2, seed=3)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(labels)
    counts = np.bincount(labels[te], minlength=5)
    assert counts.tolist() == [0, 1, 2, 2, 4]
    assert set(labels[tr]) == set(range(5))
    tr2, te2 = split_per_identity(labels, 0.2, seed=3)
    assert np.array_equal(te, te2)
    assert not np.array_equal(te, split_per_identity(labels, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="0 < test_fraction < 1"):
        split_per_identity(labels, 1.0)


def test_facedata_validates():
    with pytest.raises(ValueError, match=">= 0"):
        FaceData(np.zeros((2, 8, 8), np.uint8), np.array([0, -1]))


@pytest.mark.parametrize("name,shape,classes", [("att_faces", (112, 92), 40), ("extended_yaleb", (112, 112), 38), ("lfw", (112, 112), 158)])
def test_real_data_sets_load(data_root, name, shape, classes):
    faces = load_faces(name)
    assert faces.image_shape == shape and faces.num_classes == classes
    assert len(faces.names) == classes
