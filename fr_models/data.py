"""Face data: the container, the ``.npz`` loader, the built-in synthetic default, and identity-wise splits.

The ``.npz`` format is the one of the real faces this project is tested on: arrays ``images`` (uint8,
``(N, H, W)`` grayscale or ``(N, H, W, C)`` colour), ``labels`` (``(N,)`` integers) and optionally ``names``.
Data sets are found by path, or by name under the folder named by the environment variable ``MIXUP_ENV_DATA``
(``$MIXUP_ENV_DATA/<name>/<name>.npz``, e.g. ``lfw``, ``att_faces``, ``extended_yaleb``).
"""

from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fr_models.synthetic import make_synthetic_faces

__all__ = [
    "DATA_ENV_VAR",
    "check_identity_split",
    "FaceData",
    "Pairs",
    "concat_faces",
    "images_to_tensor",
    "load_faces",
    "faces_from_torchvision",
    "load_image_folder",
    "load_lfw_pairs",
    "load_npz",
    "load_torchvision_lfw",
    "split_identities",
    "split_per_identity",
]

#: The built-in synthetic data set: 20 identities x 40 images (64x64). 40 images per identity rather than 20: with
#: 16 training faces per identity the frequency-domain models stayed below 0.7 clean accuracy at k = 6 after
#: 200 updates (measured for issue 14); with 32 they reach about 0.9.
SYNTHETIC_IDENTITIES, SYNTHETIC_IMAGES_PER_IDENTITY = 20, 40

#: Environment variable naming a folder of data sets (``<folder>/<name>/<name>.npz``).
DATA_ENV_VAR = "MIXUP_ENV_DATA"


@dataclass
class Pairs:
    """Verification pairs over the images of a :class:`FaceData`.

    :ivar idx1: ``(P,)`` index of each pair's first image.
    :ivar idx2: ``(P,)`` index of its second image.
    :ivar same: ``(P,)`` bool, same identity.
    :ivar fold: ``(P,)`` fold of each pair (LFW: 0..9).
    """

    idx1: np.ndarray
    idx2: np.ndarray
    same: np.ndarray
    fold: np.ndarray

    def __len__(self) -> int:
        return len(self.idx1)


@dataclass
class FaceData:
    """Face images with identity labels.

    :ivar images: uint8 ``(N, H, W)`` (grayscale) or ``(N, H, W, C)`` (colour).
    :ivar labels: int64 ``(N,)``, identities ``0..num_classes-1``.
    :ivar names: one name per identity (may be empty).
    :ivar source: where the data came from (a path or ``"synthetic(...)"``).
    """

    images: np.ndarray
    labels: np.ndarray
    names: list[str] = field(default_factory=list)
    source: str = ""
    pairs: Pairs | None = None

    def __post_init__(self) -> None:
        images, labels = np.asarray(self.images), np.asarray(self.labels)
        where = f" in {self.source}" if self.source else ""
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(
                f"images{where} must be uint8 of shape (N, H, W) or (N, H, W, C), got {images.dtype} {images.shape}"
            )
        if images.shape[0] == 0:
            raise ValueError(f"the data set{where} holds no images")
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels{where} must be integers of shape ({images.shape[0]},) (one per image), "
                f"got {labels.dtype} {labels.shape}"
            )
        if labels.min() < 0:
            raise ValueError(f"labels{where} must be >= 0, got {labels.min()}")
        self.images, self.labels = images, labels.astype(np.int64)
        if self.pairs is not None:
            p = self.pairs
            n = len(p.idx1)
            if not all(len(a) == n for a in (p.idx2, p.same, p.fold)):
                raise ValueError(f"pair arrays{where} differ in length: pair_idx1 {n}, pair_idx2 {len(p.idx2)}, "
                                 f"pair_same {len(p.same)}, pair_fold {len(p.fold)}")
            for name, idx in (("pair_idx1", p.idx1), ("pair_idx2", p.idx2)):
                if n and (idx.min() < 0 or idx.max() >= images.shape[0]):
                    raise ValueError(f"{name}{where} indexes images 0..{images.shape[0] - 1}, got {idx.min()}..{idx.max()}")

    @property
    def num_classes(self) -> int:
        """Number of identities (largest label + 1)."""
        return int(self.labels.max()) + 1

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the images."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def planes(self) -> int:
        """Colour planes: 1 for grayscale, C for ``(N, H, W, C)``."""
        return 1 if self.images.ndim == 3 else int(self.images.shape[3])

    def subset(self, idx: np.ndarray) -> FaceData:
        """The images ``idx`` as a data set of their own, identities relabelled ``0..k-1`` in label order (so a
        model trained on it has exactly ``k`` classes); names follow. Pairs are dropped.

        :param idx: image indices (e.g. the private side of :func:`split_identities`).
        :raises ValueError: ``idx`` is empty or out of range.
        """
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            raise ValueError("subset() got no image indices")
        if idx.min() < 0 or idx.max() >= len(self.labels):
            raise ValueError(f"subset() indices must be in 0..{len(self.labels) - 1}, got {idx.min()}..{idx.max()}")
        kept, labels = np.unique(self.labels[idx], return_inverse=True)
        names = [self.names[c] for c in kept] if len(self.names) >= self.num_classes else []
        return FaceData(self.images[idx], labels.astype(np.int64), names, self.source)


def load_npz(path: str | os.PathLike[str]) -> FaceData:
    """Load a ``.npz`` face file with arrays ``images`` and ``labels`` (and optionally ``names``).

    :param path: the file.
    :raises FileNotFoundError: the file does not exist.
    :raises ValueError: the file is empty, not a ``.npz`` archive, or lacks / mis-shapes the arrays.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"face data file {str(p)!r} does not exist")
    if p.stat().st_size == 0:
        raise ValueError(f"face data file {str(p)!r} is empty: expected a .npz archive with 'images' and 'labels'")
    if not zipfile.is_zipfile(p):
        raise ValueError(f"face data file {str(p)!r} is not a readable .npz archive (no zip signature)")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("images", "labels") if k not in z.files]
            if missing:
                raise ValueError(
                    f"face data file {str(p)!r} lacks the array(s) {missing}: it has {sorted(z.files)}; "
                    "expected 'images' (N,H,W) uint8 and 'labels' (N,)"
                )
            images, labels = z["images"], z["labels"]
            names = [str(n) for n in z["names"]] if "names" in z.files else []
            pairs = None
            if "pair_idx1" in z.files:
                pairs = Pairs(z["pair_idx1"].astype(np.int64), z["pair_idx2"].astype(np.int64),
                              z["pair_same"].astype(bool), z["pair_fold"].astype(np.int64))
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"face data file {str(p)!r} is not a readable .npz archive ({e})") from e
    return FaceData(images=images, labels=labels, names=names, source=str(p), pairs=pairs)


def concat_faces(parts: list[FaceData], source: str = "") -> FaceData:
    """Join data sets whose labels are local to each part (e.g. the two LFW pairs files): labels and pair indices
    are offset so they stay distinct; names are concatenated."""
    if not parts:
        raise ValueError("nothing to concatenate")
    images, labels, names, pairs = [], [], [], []
    n_img = n_cls = 0
    for part in parts:
        images.append(part.images)
        labels.append(part.labels + n_cls)
        names += part.names
        if part.pairs is not None:
            q = part.pairs
            pairs.append((q.idx1 + n_img, q.idx2 + n_img, q.same, q.fold))
        n_img += len(part.labels)
        n_cls += max(part.num_classes, len(part.names))
    joined = Pairs(*(np.concatenate(a) for a in zip(*pairs))) if pairs else None
    return FaceData(np.concatenate(images), np.concatenate(labels), names, source or "+".join(p.source for p in parts), joined)


def load_lfw_pairs(root: str | os.PathLike[str] | None = None) -> FaceData:
    """The official LFW View-2 protocol (6000 pairs in 10 folds) from the two ``lfw_pairs_folds*.npz`` files.

    :param root: the folder holding them (default: ``$MIXUP_ENV_DATA/lfw``).
    """
    folder = Path(root) if root is not None else Path(os.environ.get(DATA_ENV_VAR, "")) / "lfw"
    files = sorted(folder.glob("lfw_pairs_folds*.npz")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no lfw_pairs_folds*.npz files in {str(folder)!r}: pass root= or set {DATA_ENV_VAR}")
    return concat_faces([load_npz(f) for f in files], source=f"lfw pairs ({len(files)} files)")


def load_faces(source: str | os.PathLike[str] | FaceData | None = None) -> FaceData:
    """Resolve a data source to :class:`FaceData`.

    :param source: ``None`` or ``"synthetic"`` for the built-in synthetic faces (a stand-in: real results need
        real faces); a :class:`FaceData`; a path to a ``.npz`` file; or a data set name looked up as
        ``$MIXUP_ENV_DATA/<name>/<name>.npz``.
    """
    if isinstance(source, FaceData):
        return source
    if source is None or source == "synthetic":
        images, labels = _default_synthetic()
        return FaceData(images, labels, [f"synthetic_{i:02d}" for i in range(int(labels.max()) + 1)], "synthetic")
    p = Path(source)
    if p.is_file() or p.suffix == ".npz":
        return load_npz(p)
    tried = [str(p)]
    root = os.environ.get(DATA_ENV_VAR)
    if root:
        for cand in (Path(root) / str(source) / f"{source}.npz", Path(root) / f"{source}.npz"):
            tried.append(str(cand))
            if cand.is_file():
                return load_npz(cand)
    hint = "" if root else f" (set {DATA_ENV_VAR} to a folder of data sets to load them by name)"
    raise FileNotFoundError(
        f"no face data found for {str(source)!r}: tried {tried}{hint}; accepted: 'synthetic', a .npz path, "
        f"or a data set name under ${DATA_ENV_VAR}"
    )


@functools.lru_cache(maxsize=1)
def _default_synthetic() -> tuple[np.ndarray, np.ndarray]:
    """The default synthetic faces, generated once per process (every env built on the default reuses them);
    read-only, so no caller can change what the next one gets."""
    images, labels = make_synthetic_faces(SYNTHETIC_IDENTITIES, SYNTHETIC_IMAGES_PER_IDENTITY)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def images_to_tensor(
    images: np.ndarray, size: int | tuple[int, int] | None = None, crop: bool = True
) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` / ``(N, H, W, C)`` -> float tensor ``(N, C, H, W)`` in ``[0, 1]``.

    :param images: the images.
    :param size: resize to this ``(H, W)`` (or square size) with antialiased bilinear interpolation; ``None``
        keeps the native size.
    :param crop: first centre-crop to the aspect ratio of ``size`` so faces are not stretched (e.g. AT&T's
        112x92 faces become 92x92 before resizing to a square).
    """
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / np.float32(255.0))  # a new, writable array
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    if size is not None:
        hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(hw) <= 0:
            raise ValueError(f"image size {hw[0]}x{hw[1]} is invalid: accepted positive sizes (the block DCT needs "
                             "upsample x side to be a multiple of 8, the resnet body a multiple of 16)")
        h, w = x.shape[-2:]
        if crop and h * hw[1] != w * hw[0]:
            ch, cw = (h, round(h * hw[1] / hw[0])) if w * hw[0] > h * hw[1] else (round(w * hw[0] / hw[1]), w)
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        if hw != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False).clamp_(0.0, 1.0)
    return x


def split_per_identity(
    labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/test split of images within identities (closed-set identification).

    Every identity with at least 2 images gives ``max(1, round(test_fraction * n))`` images to the test set
    (and keeps at least one for training); identities with one image go to training only.

    :param labels: ``(N,)`` identity labels.
    :param test_fraction: fraction of each identity's images held out, in ``(0, 1)``.
    :param seed: seed of the split.
    :return: ``(train_idx, test_idx)``, sorted index arrays.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} is out of range: accepted 0 < test_fraction < 1")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(test_fraction * len(idx))))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def split_identities(
    labels: np.ndarray, public_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, identity-disjoint private/public split: no identity has images on both sides.

    The private side trains the target model; the public side is the attacker's (or an evaluator's) data.

    :param labels: ``(N,)`` identity labels.
    :param public_fraction: fraction of the identities that go public, in ``(0, 1)``; at least one identity
        lands on each side.
    :param seed: seed of the split.
    :return: ``(private_idx, public_idx)``, sorted image indices.
    """
    if not 0.0 < public_fraction < 1.0:
        raise ValueError(f"public_fraction={public_fraction} is out of range: accepted 0 < public_fraction < 1")
    labels = np.asarray(labels)
    ids = np.unique(labels)
    if len(ids) < 2:
        raise ValueError(f"an identity-disjoint split needs at least 2 identities, got {len(ids)}")
    rng = np.random.default_rng(seed)
    n_public = min(len(ids) - 1, max(1, round(public_fraction * len(ids))))
    public_ids = rng.permutation(ids)[:n_public]
    public = np.isin(labels, public_ids)
    return np.flatnonzero(~public), np.flatnonzero(public)


def check_identity_split(
    labels: np.ndarray, private_idx: np.ndarray, public_idx: np.ndarray, names: list[str] | None = None,
    min_private: int = 2, min_public: int = 2,
) -> None:
    """Check a private/public split before an attack: both sides in range, enough identities on each side, and
    no identity on both sides (the attacker's public faces must be of other people).

    :param labels: ``(N,)`` identities of the whole data set.
    :param private_idx: image indices of the private side.
    :param public_idx: image indices of the public side.
    :param names: identity names, to name the overlapping ones in the error.
    :param min_private: identities the private side needs.
    :param min_public: identities the public side needs.
    :raises ValueError: naming what is wrong.
    """
    labels = np.asarray(labels)
    sides = {"private": np.asarray(private_idx, dtype=np.int64), "public": np.asarray(public_idx, dtype=np.int64)}
    for side, idx in sides.items():
        if idx.size and (idx.min() < 0 or idx.max() >= len(labels)):
            raise ValueError(f"{side} indices must be in 0..{len(labels) - 1} (images of the data set), got "
                             f"{idx.min()}..{idx.max()}: is the split from another data set?")
    ids = {side: np.unique(labels[idx]) for side, idx in sides.items()}
    both = np.intersect1d(ids["private"], ids["public"])
    if len(both):
        shown = [names[i] if names and i < len(names) else str(i) for i in both[:5]]
        raise ValueError(f"{len(both)} identities are on both the private and the public side (e.g. {shown}): the "
                         "attacker's public faces must be of other identities; use an identity-disjoint split "
                         "(fr_models.data.split_identities)")
    for side, need in (("private", min_private), ("public", min_public)):
        if len(ids[side]) < need:
            raise ValueError(f"the {side} side has {len(ids[side])} identities, the attack needs at least {need}")


#: File name endings :func:`load_image_folder` reads.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".bmp", ".tif", ".tiff", ".gif", ".webp")


def _to_array(img: Any, size: int | None, grayscale: bool, name: str) -> np.ndarray:
    """A PIL image (or CHW tensor / HWC array) -> uint8 ``(H, W)`` or ``(H, W, 3)``, centre-cropped and resized."""
    from PIL import Image, ImageOps

    if isinstance(img, torch.Tensor):
        arr = img.detach().cpu().numpy()
        arr = arr.transpose(1, 2, 0) if arr.ndim == 3 else arr
        img = Image.fromarray((arr * 255).round().astype(np.uint8).squeeze() if arr.dtype != np.uint8 else arr.squeeze())
    elif isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    if not isinstance(img, Image.Image):
        raise TypeError(f"{name}: expected a PIL image, tensor or array, got {type(img).__name__}")
    img = img.convert("L" if grayscale else "RGB")
    if size is not None:
        img = ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def _stack(arrays: list[np.ndarray], names: list[str], where: str) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        odd = next(i for i, a in enumerate(arrays) if a.shape != first)
        raise ValueError(f"images in {where} differ in size ({names[0]} is {first}, {names[odd]} is "
                         f"{arrays[odd].shape}): pass size= to crop and resize them to one size")
    return np.stack(arrays)


def load_image_folder(
    root: str | os.PathLike[str], size: int | None = None, grayscale: bool = True
) -> FaceData:
    """An identity-per-folder image tree, ``root/<identity>/<image>``, in any format Pillow reads.

    Identities are the sorted folder names (label = position); images are read in sorted order.

    :param root: the tree's root.
    :param size: centre-crop to square and resize to ``size x size`` (needed when sizes differ); a multiple of 8
        for the block DCT, e.g. 64 or 112.
    :param grayscale: convert to grayscale (``(N, H, W)``); ``False`` keeps colour (``(N, H, W, 3)``).
    :raises FileNotFoundError: ``root`` is not a folder.
    :raises ValueError: fewer than 2 identity folders, an identity folder without images, an image that fails to
        decode (the file is named), or images of different sizes without ``size``.
    """
    from PIL import UnidentifiedImageError

    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"image folder {str(base)!r} does not exist")
    folders = sorted(d for d in base.iterdir() if d.is_dir())
    if len(folders) < 2:
        found = f"only {folders[0].name!r}" if folders else "none"
        raise ValueError(f"image folder {str(base)!r} has {found} as identity folder(s): face recognition needs at "
                         f"least 2 identities, one sub-folder each")
    from PIL import Image

    arrays, labels, files = [], [], []
    for label, folder in enumerate(folders):
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise ValueError(f"identity folder {str(folder)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        for path in paths:
            try:
                with Image.open(path) as img:
                    img.load()
                    arrays.append(_to_array(img, size, grayscale, str(path)))
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                raise ValueError(f"image {str(path)!r} failed to decode: {e}") from e
            labels.append(label)
            files.append(str(path))
    return FaceData(_stack(arrays, files, str(base)), np.asarray(labels), [f.name for f in folders], str(base))


def faces_from_torchvision(
    dataset: Any, size: int | None = None, grayscale: bool = True, names: list[str] | None = None
) -> FaceData:
    """Convert a torchvision-style data set of ``(image, identity)`` items (``LFWPeople``, ``ImageFolder``, ...).

    :param dataset: indexable, ``len()``-able, items ``(PIL image | tensor, int label)``.
    :param size: centre-crop to square and resize (needed when sizes differ).
    :param grayscale: convert to grayscale; ``False`` keeps colour.
    :param names: identity names (default: the data set's ``classes``, if it has them).
    """
    if len(dataset) == 0:
        raise ValueError(f"the {type(dataset).__name__} data set is empty")
    arrays, labels = [], []
    for i in range(len(dataset)):
        img, target = dataset[i]
        arrays.append(_to_array(img, size, grayscale, f"{type(dataset).__name__}[{i}]"))
        labels.append(int(target))
    names = names if names is not None else [str(c) for c in getattr(dataset, "classes", [])]
    where = type(dataset).__name__
    return FaceData(_stack(arrays, [f"{where}[{i}]" for i in range(len(arrays))], where), np.asarray(labels), names, where)


def load_torchvision_lfw(
    root: str | os.PathLike[str], size: int = 112, split: str = "10fold", image_set: str = "funneled",
    grayscale: bool = True,
) -> FaceData:
    """LFW through ``torchvision.datasets.LFWPeople``, for users who downloaded it themselves (this library never
    downloads; run ``LFWPeople(root, download=True)`` once on a connected machine).

    :param root: torchvision's LFW root.
    :param size: centre-crop and resize to this square size (LFW images are 250x250).
    :param split: ``"10fold"``, ``"train"`` or ``"test"``.
    :param image_set: ``"original"``, ``"funneled"`` or ``"deepfunneled"``.
    :param grayscale: convert to grayscale.
    """
    from torchvision.datasets import LFWPeople

    try:
        ds = LFWPeople(str(root), split=split, image_set=image_set, download=False)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"LFW ({image_set}, {split}) not found under {str(root)!r} ({e}); download it yourself with "
            f"torchvision.datasets.LFWPeople(root, download=True): mixup-env never downloads"
        ) from e
    names = [n for n, _ in sorted(ds.class_to_idx.items(), key=lambda kv: kv[1])]
    return faces_from_torchvision(ds, size=size, grayscale=grayscale, names=names)
