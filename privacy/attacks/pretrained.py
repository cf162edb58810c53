"""A pretrained, independent judge: dlib's ResNet face-recognition model, identifying against an enrolled gallery.

The model-inversion literature judges reconstructions with an evaluation model trained on *other* data than the
target. dlib's ``dlib_face_recognition_resnet_model_v1`` (a ResNet-29 metric network; 99.38 % on LFW verification
in its authors' report) is such a model: it never saw the private faces and shares no architecture with any
target here. It ships, with the 5-point landmark model that aligns a face before it is embedded, inside the
``face-recognition-models`` wheel; ``dlib-bin`` is the library. Both install from the registry as this package's
``judge`` extra (``pip install -e ".[judge]"``); nothing is downloaded at run time.

Judging (:class:`PretrainedJudge`): every image (grey faces replicated to three planes, values in ``[0, 1]``) is
aligned by the 5-point landmarks found in the whole image (the faces here are crops already) and embedded in
dlib's 128-d space. The private faces are the gallery: a reconstruction's scores are its negative Euclidean
distances to each identity's centroid, so ``logits``/``features``/``num_classes`` read as those of the in-house
:class:`~privacy.attacks.evaluator.EvaluationClassifier` and :func:`~privacy.attacks.evaluator.attack_metrics`
takes either. Its own accuracy on the real private faces (each face against the centroids of the *other* faces,
leave-one-out) is ``val_accuracy``: the ceiling of every attack figure it reports.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fr_models.trainer import atomic_torch_save

__all__ = ["DLIB_MODELS", "PretrainedJudge", "dlib_model_files", "leave_one_out_hits", "load_dlib"]

#: The judge's model files inside the ``face-recognition-models`` wheel (0.3.0), by role: file name and SHA-256.
DLIB_MODELS: dict[str, tuple[str, str]] = {
    "embedding": ("dlib_face_recognition_resnet_model_v1.dat",
                  "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
    "landmarks": ("shape_predictor_5_face_landmarks.dat",
                  "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"),
}

_EXTRA = 'the pretrained judge needs the "judge" extra: pip install "mixup-env[judge]" (dlib-bin, face-recognition-models)'


def dlib_model_files(folder: str | Path | None = None) -> dict[str, Path]:
    """The judge's model files, checked: role -> path.

    :param folder: where the ``.dat`` files lie (default: the ``models`` folder of the installed
        ``face-recognition-models`` package, found without importing it: its ``__init__`` needs ``pkg_resources``).
    :raises ImportError: the package is not installed (the message names the extra).
    :raises ValueError: a file is missing or is not the file it should be (its SHA-256 differs).
    """
    if folder is None:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(_EXTRA)
        folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = {}
    for role, (name, digest) in DLIB_MODELS.items():
        path = Path(folder) / name
        if not path.is_file():
            raise ValueError(f"the judge's {role} model {str(path)!r} is missing; reinstall the judge extra: {_EXTRA}")
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != digest:
            raise ValueError(f"the judge's {role} model {str(path)!r} is not dlib's {name} (SHA-256 {h.hexdigest()[:12]}..., "
                             f"expected {digest[:12]}...); reinstall face-recognition-models==0.3.0")
        files[role] = path
    return files


def load_dlib() -> Any:
    """The ``dlib`` module (:class:`ImportError` naming the extra if absent)."""
    try:
        import dlib
    except ImportError as e:
        raise ImportError(_EXTRA) from e
    return dlib


def leave_one_out_hits(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """1/0 per face of the identities with at least two faces: is the nearest identity centroid its own, with the
    face left out of its own identity's centroid? (The judge's own accuracy: ``val_accuracy``.)"""
    emb, y = features.double(), torch.as_tensor(labels).long()
    counts = torch.bincount(y, minlength=num_classes).double()
    sums = torch.zeros(num_classes, emb.shape[1], dtype=torch.float64).index_add_(0, y, emb)
    d = torch.cdist(emb, sums / counts.clamp_min(1).unsqueeze(1))
    d[:, counts == 0] = float("inf")
    own = (sums[y] - emb) / (counts[y] - 1).clamp_min(1).unsqueeze(1)
    d[torch.arange(len(y)), y] = (emb - own).norm(dim=1)
    many = counts[y] > 1
    return (d.argmin(1) == y)[many].double().numpy()


def _to_uint8_rgb(images: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` in ``[0, 1]`` with C = 1 or 3 -> ``(N, H, W, 3)`` uint8, C-contiguous (what dlib reads)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"the judge reads (N, 1 or 3, H, W) images in [0, 1], got {tuple(images.shape)}")
    x = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


@dataclass
class PretrainedJudge:
    """dlib's face embedding with a gallery of enrolled identities (see the module's docstring).

    :ivar class_names: the enrolled identities, in label order.
    :ivar centroids: ``(num_classes, 128)`` mean embedding of each identity's gallery faces.
    :ivar val_accuracy: leave-one-out nearest-centroid top-1 on the gallery faces (``nan`` if no identity has two).
    :ivar gallery_features: ``(N, 128)`` the gallery faces' embeddings, in their order (reused as the private
        features of :func:`~privacy.attacks.evaluator.attack_metrics`).
    :ivar gallery_key: :meth:`key` of the gallery.
    :ivar name: the judge's name in the reports.
    """

    class_names: list[str]
    centroids: torch.Tensor
    val_accuracy: float = float("nan")
    name: str = "dlib_resnet_v1"
    gallery_features: torch.Tensor | None = field(default=None, repr=False)
    gallery_key: str = ""
    _models: tuple[Any, Any] | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.centroids.shape[0])

    @staticmethod
    def _load_models() -> tuple[Any, Any]:
        dlib = load_dlib()
        files = dlib_model_files()
        return dlib.shape_predictor(str(files["landmarks"])), dlib.face_recognition_model_v1(str(files["embedding"]))

    @classmethod
    def enrol(cls, images: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> PretrainedJudge:
        """Embed the gallery ``images`` (``(N, C, H, W)`` in ``[0, 1]``) of identities ``labels`` (``0..len(class_names)-1``).

        :raises ImportError: the judge extra is not installed. :raises ValueError: bad shapes or an identity
            with no gallery face.
        """
        labels = torch.as_tensor(labels).long().cpu()
        if len(images) != len(labels) or len(labels) == 0:
            raise ValueError(f"need one label per gallery image (and at least one), got {len(images)} and {len(labels)}")
        c = len(class_names)
        counts = torch.bincount(labels, minlength=c)
        if len(counts) > c or bool((counts == 0).any()):
            raise ValueError(f"every identity 0..{c - 1} needs a gallery face, got labels {labels.unique().tolist()[:10]}...")
        judge = cls(list(class_names), torch.zeros(c, 128), _models=cls._load_models())
        emb = judge.features(images)
        sums = torch.zeros(c, emb.shape[1], dtype=torch.float64).index_add_(0, labels, emb.double())
        judge.centroids = (sums / counts.unsqueeze(1)).float()
        judge.gallery_features, judge.gallery_key = emb, cls.key(images, labels, list(class_names))
        hits = leave_one_out_hits(emb, labels, c)
        if len(hits):
            judge.val_accuracy = float(hits.mean())
        return judge

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 128)`` dlib embeddings (not normalised: dlib's distances are Euclidean; same faces < 0.6)."""
        if self._models is None:
            self._models = self._load_models()
        landmarks, net = self._models
        dlib = load_dlib()
        rgb = _to_uint8_rgb(images)
        h, w = rgb.shape[1:3]
        box = dlib.rectangle(0, 0, w - 1, h - 1)  # the faces are crops: the whole image is the face
        out = np.empty((len(rgb), 128), dtype=np.float32)
        for i, img in enumerate(rgb):
            out[i] = np.asarray(net.compute_face_descriptor(img, landmarks(img, box), 0, 0.25))
        return torch.from_numpy(out)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)``: minus the distance of each image's embedding to each identity's centroid."""
        return self.logits_and_features(images)[0]

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`logits` and :meth:`features` of ``images`` from one embedding pass (dlib's costs ~0.14 s a face)."""
        f = self.features(images)
        return -torch.cdist(f, self.centroids), f

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the enrolled gallery atomically (the dlib models are not copied: they ship in their wheel)."""
        state = {"format": "mixup_env.pretrained_judge/1", "name": self.name, "class_names": list(self.class_names),
                 "centroids": self.centroids, "val_accuracy": self.val_accuracy,
                 "gallery_features": self.gallery_features, "gallery_key": self.gallery_key}
        return atomic_torch_save(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PretrainedJudge:
        """Read a gallery written by :meth:`save` (``weights_only=True``); the models load on first use."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file
            raise ValueError(f"{str(path)!r} is not a pretrained judge's gallery (PretrainedJudge.save writes one): {e}") from e
        if not isinstance(state, dict) or state.get("format") != "mixup_env.pretrained_judge/1":
            raise ValueError(f"{str(path)!r} is not a pretrained judge's gallery (PretrainedJudge.save writes one)")
        return cls(state["class_names"], state["centroids"], float(state["val_accuracy"]), state["name"],
                   gallery_features=state["gallery_features"], gallery_key=state["gallery_key"])

    @staticmethod
    def key(images: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> str:
        """A digest of a gallery (its images, labels and names): a saved gallery is reused only for the same one."""
        h = hashlib.sha256()
        for t in (images.detach().float().cpu().contiguous(), torch.as_tensor(labels).long().cpu().contiguous()):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        h.update("\n".join(class_names).encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """What a report records of the judge: name, enrolled identities, its own accuracy on the real faces."""
        return {"name": self.name, "identities": self.num_classes, "accuracy_on_private_faces": self.val_accuracy}
