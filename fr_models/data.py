"""Face data: the container, the ``.npz`` loader, the built-in synthetic default, and identity-wise splits.

The ``.npz`` format is the one of the real faces this project is tested on: arrays ``images`` (uint8,
``(N, H, W)`` grayscale or ``(N, H, W, C)`` colour), ``labels`` (``(N,)`` integers) and optionally ``names``.
Data sets are found by path, or by name under the folder named by the environment variable ``MIXUP_ENV_DATA``
(``$MIXUP_ENV_DATA/<name>/<name>.npz``, e.g. ``lfw``, ``att_faces``, ``extended_yaleb``).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fr_models.synthetic import make_synthetic_faces

__all__ = ["DATA_ENV_VAR", "FaceData", "images_to_tensor", "load_faces", "load_npz", "split_per_identity"]

#: Environment variable naming a folder of data sets (``<folder>/<name>/<name>.npz``).
DATA_ENV_VAR = "MIXUP_ENV_DATA"


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
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"face data file {str(p)!r} is not a readable .npz archive ({e})") from e
    return FaceData(images=images, labels=labels, names=names, source=str(p))


def load_faces(source: str | os.PathLike[str] | FaceData | None = None) -> FaceData:
    """Resolve a data source to :class:`FaceData`.

    :param source: ``None`` or ``"synthetic"`` for the built-in synthetic faces (a stand-in: real results need
        real faces); a :class:`FaceData`; a path to a ``.npz`` file; or a data set name looked up as
        ``$MIXUP_ENV_DATA/<name>/<name>.npz``.
    """
    if isinstance(source, FaceData):
        return source
    if source is None or source == "synthetic":
        images, labels = make_synthetic_faces()
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


def images_to_tensor(images: np.ndarray, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` / ``(N, H, W, C)`` -> float tensor ``(N, C, H, W)`` in ``[0, 1]``.

    :param images: the images.
    :param size: resize to this ``(H, W)`` (or square size) with antialiased bilinear interpolation; ``None``
        keeps the native size.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    if size is not None:
        hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(hw) <= 0 or hw[0] % 8 or hw[1] % 8:
            raise ValueError(f"image size {hw[0]}x{hw[1]} is not a multiple of 8: accepted positive multiples of 8")
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
