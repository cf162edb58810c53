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
    assert images_to_tensor(imgs, 12).shape == (2, 1, 12, 12)  # the transform, not the resize, needs whole blocks
    with pytest.raises(ValueError, match="0x0 is invalid: accepted positive sizes"):
        images_to_tensor(imgs, 0)


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


# ---------------------------------------------------------------------------------------------------- image trees
def make_tree(root, sizes=((20, 24), (20, 24)), colour=False, per_id=3, fmt="png"):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        d = root / f"person_{i}"
        d.mkdir(parents=True)
        for j in range(per_id):
            arr = rng.integers(0, 256, (h, w, 3) if colour else (h, w), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{j}.{fmt}")
    return root


def test_image_folder_loader_shapes_labels_and_colour(tmp_path):
    from fr_models.data import load_image_folder

    faces = load_image_folder(make_tree(tmp_path / "g"))
    assert faces.images.shape == (6, 20, 24) and faces.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert faces.names == ["person_0", "person_1"] and faces.planes == 1
    col = load_image_folder(make_tree(tmp_path / "c", colour=True, fmt="jpg"), size=16, grayscale=False)
    assert col.images.shape == (6, 16, 16, 3) and col.planes == 3
    x = images_to_tensor(col.images)
    assert x.shape == (6, 3, 16, 16)
    mixed_sizes = make_tree(tmp_path / "m", sizes=((20, 24), (32, 16)))
    with pytest.raises(ValueError, match=r"differ in size .*person_0.*0\.png.*person_1.*pass size="):
        load_image_folder(mixed_sizes)
    assert load_image_folder(mixed_sizes, size=8).images.shape == (6, 8, 8)


def test_colour_faces_train_in_the_env(tmp_path):
    from fr_models.data import load_image_folder
    from mixup_env import FrequencyMixupEnv

    faces = load_image_folder(make_tree(tmp_path / "c", sizes=((16, 16),) * 4, colour=True, per_id=6), grayscale=False)
    env = FrequencyMixupEnv(data=faces, batch_size=8, episode_steps=2, recipe="tiny")
    assert env.masking.mask.planes == 3 and env.fr_config.in_channels == 3 * 54
    env.reset(seed=0)
    _, r, _, _, _ = env.step(0)
    assert np.isfinite(r)


def test_image_folder_bad_input(tmp_path):
    from fr_models.data import load_image_folder

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    one = make_tree(tmp_path / "one", sizes=((8, 8),))
    with pytest.raises(ValueError, match=r"has only 'person_0' as identity folder.*at least 2 identities"):
        load_image_folder(one)
    bad = make_tree(tmp_path / "bad")
    (bad / "person_1" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"image '.*person_1/broken\.png' failed to decode"):
        load_image_folder(bad)
    empty = make_tree(tmp_path / "empty")
    (empty / "person_2").mkdir()
    with pytest.raises(ValueError, match=r"person_2' holds no images"):
        load_image_folder(empty)


def test_torchvision_datasets_convert(tmp_path):
    from torchvision.datasets import ImageFolder

    from fr_models.data import faces_from_torchvision, load_image_folder, load_torchvision_lfw

    root = make_tree(tmp_path / "t")
    via_tv = faces_from_torchvision(ImageFolder(str(root)))
    direct = load_image_folder(root)
    assert np.array_equal(via_tv.images, direct.images) and np.array_equal(via_tv.labels, direct.labels)
    assert via_tv.names == direct.names
    with pytest.raises(FileNotFoundError, match="LFW .* not found under .*download it yourself.*never downloads"):
        load_torchvision_lfw(tmp_path / "no_lfw")


def test_centre_crop_keeps_aspect():
    img = np.zeros((1, 16, 8), np.uint8)
    img[0, :4] = 255  # a bright band at the top, cropped away by a centre crop to 8x8
    x = images_to_tensor(img, 8)
    assert x.shape == (1, 1, 8, 8) and float(x.max()) == 0.0
    assert float(images_to_tensor(img, 8, crop=False).max()) > 0


# ---------------------------------------------------------------------------------------------------- splits, pairs
def test_identity_disjoint_split():
    from fr_models.data import split_identities

    labels = np.repeat(np.arange(10), 5)
    priv, pub = split_identities(labels, 0.3, seed=1)
    assert set(labels[priv]).isdisjoint(labels[pub]) and len(priv) + len(pub) == 50
    assert len(set(labels[pub])) == 3
    assert np.array_equal(pub, split_identities(labels, 0.3, seed=1)[1])
    assert not np.array_equal(pub, split_identities(labels, 0.3, seed=2)[1])
    with pytest.raises(ValueError, match="at least 2 identities"):
        split_identities(np.zeros(5, int), 0.5)


def test_npz_pairs_validated(tmp_path):
    write_npz(tmp_path / "p.npz", pair_idx1=np.array([0, 1]), pair_idx2=np.array([2, 40]),
              pair_same=np.array([True, False]), pair_fold=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"pair_idx2 in .*p\.npz indexes images 0\.\.11, got 2\.\.40"):
        load_npz(tmp_path / "p.npz")
    write_npz(tmp_path / "q.npz", pair_idx1=np.array([0, 1]), pair_idx2=np.array([2]),
              pair_same=np.array([True, False]), pair_fold=np.array([0, 1]))
    with pytest.raises(ValueError, match="pair arrays in .*q.npz differ in length"):
        load_npz(tmp_path / "q.npz")


def test_real_lfw_pairs_protocol(data_root):
    from fr_models.data import load_lfw_pairs

    faces = load_lfw_pairs(data_root / "lfw")
    p = faces.pairs
    assert len(p) == 6000 and int(p.same.sum()) == 3000
    assert np.bincount(p.fold).tolist() == [600] * 10
    same_label = faces.labels[p.idx1] == faces.labels[p.idx2]
    assert np.array_equal(same_label, p.same)  # label offsets across the two files kept identities apart
    assert faces.images.shape[1:] == (112, 112) and len(faces.names) == faces.num_classes


def test_real_att_faces_slice_crops_to_square(data_root):
    faces = load_faces("att_faces")
    x = images_to_tensor(faces.images[:20], 64)
    assert x.shape == (20, 1, 64, 64) and faces.labels[:20].tolist() == [0] * 10 + [1] * 10


def test_default_synthetic_is_generated_once_and_read_only():
    a, b = load_faces(None), load_faces("synthetic")
    assert a.images is b.images  # cached: building many envs on the default does not regenerate it
    with pytest.raises(ValueError, match="read-only"):
        a.images[0, 0, 0] = 1
    assert images_to_tensor(a.images[:2]).shape == (2, 1, 64, 64)
