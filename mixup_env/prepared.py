"""A face data set prepared for the env: split per identity, moved to the frequency domain once, on the env's
device. ``FrequencyMixupEnv`` prepares one from its arguments, or takes one ready-made (so several envs, or a
study that builds envs repeatedly, transform the faces once).

>>> from fr_models.data import load_faces
>>> prepared = prepare_faces(load_faces("synthetic"), FrequencyMasking(), batch_size=16)
>>> prepared.train_x.shape[1:], prepared.num_classes, len(prepared.test_y)
(torch.Size([54, 8, 8]), 20, 160)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fr_models.data import FaceData, images_to_tensor, split_per_identity
from fr_models.training import calibration_subset
from mixup_env.transform import FrequencyMasking

__all__ = ["STORAGE", "PreparedFaces", "prepare_faces", "transform_faces"]

#: the dtypes the precomputed channels may be stored in
STORAGE = ("float32", "float16")


@dataclass(frozen=True)
class PreparedFaces:
    """Masked frequency channels of a data set's training and held-out faces.

    :ivar source: where the faces came from (:attr:`fr_models.FaceData.source`).
    :ivar class_names: the identities' names, in label order (may be empty).
    :ivar num_classes: the number of identities.
    :ivar masking: the transform that made the channels.
    :ivar image_size: ``(H, W)`` of the faces the transform read.
    :ivar train_x: ``(N_train, C, h, w)`` channels of the training faces (in the storage dtype).
    :ivar train_y: ``(N_train,)`` their identities.
    :ivar test_x: held-out faces of the same identities.
    :ivar test_y: their identities.
    :ivar calib_x: the fixed subset of training faces batch-norm statistics are re-estimated on.
    :ivar train_indices: indices of the training faces in the data set.
    :ivar test_indices: indices of the held-out faces.
    :ivar val_x: a validation split, held out of each identity's training faces (never trained on, never the test
        faces): what a reward may measure held-out utility on; empty without one.
    :ivar val_y: their identities.
    :ivar val_indices: their indices in the data set.
    :ivar calib_y: the identities of ``calib_x`` (where the env observes accuracy without a validation split).
    """

    source: str
    class_names: tuple[str, ...]
    num_classes: int
    masking: FrequencyMasking
    image_size: tuple[int, int]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    calib_x: torch.Tensor
    train_indices: np.ndarray
    test_indices: np.ndarray
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    val_indices: np.ndarray | None = None
    calib_y: torch.Tensor | None = None

    @property
    def has_validation(self) -> bool:
        return self.val_y is not None and len(self.val_y) > 0

    @property
    def device(self) -> torch.device:
        return self.train_x.device


def prepare_faces(faces: FaceData, masking: FrequencyMasking, image_size: int | None = None,
                  test_fraction: float = 0.2, split_seed: int = 0, batch_size: int = 1, storage: str = "float16",
                  device: str | torch.device = "cpu", chunk: int = 512,
                  validation_fraction: float = 0.0) -> PreparedFaces:
    """Split ``faces`` per identity and transform them with ``masking`` once.

    :param faces: the data set.
    :param masking: the frequency transform (moved to ``device``).
    :param image_size: resize faces to this square size (``None``: their own size).
    :param test_fraction: the held-out share of each identity's faces.
    :param split_seed: the seed of the split and of the calibration subset.
    :param batch_size: the env's batch size: there must be at least as many training faces.
    :param storage: ``"float32"`` or ``"float16"``, the dtype of the stored channels.
    :param device: where the channels live.
    :param chunk: faces transformed at once.
    :param validation_fraction: the share of each identity's *training* faces held out as a validation split
        (0: none), split with ``split_seed + 1``.
    :raises ValueError: a size the transform cannot take, too few faces, a bad storage dtype, a validation split
        the faces cannot hold (each named).
    """
    if storage not in STORAGE:
        raise ValueError(f"storage={storage!r} is invalid: accepted 'float32' or 'float16'")
    h, w = faces.image_shape
    masking = masking.to(device)
    try:
        masking.output_size(image_size if image_size is not None else (h, w))
    except ValueError as e:
        raise ValueError(f"{e}; {faces.source!r} has {h}x{w} faces: pass image_size=<a size that fits> (e.g. 64 "
                         "or 112) to resize them") from None
    train_idx, test_idx = split_per_identity(faces.labels, test_fraction, split_seed)
    val_idx = np.zeros(0, dtype=np.int64)
    if validation_fraction:
        if not 0 < validation_fraction < 1:
            raise ValueError(f"validation_fraction={validation_fraction} is out of range: accepted 0 (none) or a "
                             "share in (0, 1)")
        keep, held = split_per_identity(faces.labels[train_idx], validation_fraction, split_seed + 1)
        if len(held) == 0:
            raise ValueError(f"{faces.source!r} is too small to hold a validation split: no identity keeps 2+ "
                             "training images after the test split (accepted: a data set with 3+ images per "
                             "identity, or validation_fraction=0 and a reward that needs no validation split)")
        train_idx, val_idx = train_idx[keep], train_idx[held]
    if len(train_idx) < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(train_idx)} training images of "
                         f"{faces.source!r}: accepted batch_size <= {len(train_idx)}")
    if len(test_idx) == 0:
        raise ValueError(f"{faces.source!r} has no identity with 2+ images: nothing to evaluate accuracy on")
    freq = transform_faces(faces.images, masking, image_size, getattr(torch, storage), device, chunk)
    labels = torch.from_numpy(faces.labels).to(device)
    train_x = freq[train_idx]
    calib = torch.from_numpy(calibration_subset(len(train_idx), split_seed)).to(device)
    size = (int(image_size), int(image_size)) if image_size is not None else (int(h), int(w))
    return PreparedFaces(faces.source, tuple(faces.names), faces.num_classes, masking, size, train_x, labels[train_idx],
                         freq[test_idx], labels[test_idx], train_x[calib], train_idx, test_idx, freq[val_idx],
                         labels[val_idx], val_idx, labels[train_idx][calib])


def transform_faces(images: np.ndarray, masking: FrequencyMasking | None, image_size: int | tuple[int, int] | None,
                    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                    chunk: int = 512) -> torch.Tensor:
    """Model inputs of uint8 faces ``(N, H, W[, C])``, a chunk at a time: resized, then through ``masking``
    (``None``: the pixels of a pixel-domain model), stored as ``dtype`` on ``device``."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            x = images_to_tensor(images[i : i + chunk], image_size).to(device)
            out.append((x if masking is None else masking(x)).to(dtype))
    return torch.cat(out)
