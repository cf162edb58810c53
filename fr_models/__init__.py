"""Face-recognition models for mixup-env: frequency-domain backbones, margin heads that take soft labels,
the training step and evaluation, and face data sets. Knows nothing of Gymnasium or RL."""

from fr_models.backbones import BACKBONES, FaceResNet, FrequencyBackbone, PixelBackbone, UnblockBackbone, make_backbone
from fr_models.data import DATA_ENV_VAR, FaceData, images_to_tensor, load_faces, load_npz, split_per_identity
from fr_models.evaluation import (
    VerificationResult,
    extract_embeddings,
    identification_accuracy,
    verification_scores,
    verify_kfold,
)
from fr_models.heads import ArcFaceHead, ClassifierHead, CosFaceHead, SoftmaxHead, make_head
from fr_models.synthetic import make_synthetic_faces
from fr_models.trainer import CheckpointError, FRConfig, FRTrainer, atomic_torch_save, atomic_write, load_checkpoint

__all__ = [
    "BACKBONES",
    "DATA_ENV_VAR",
    "ArcFaceHead",
    "CheckpointError",
    "ClassifierHead",
    "CosFaceHead",
    "FRConfig",
    "FRTrainer",
    "FaceData",
    "FaceResNet",
    "FrequencyBackbone",
    "PixelBackbone",
    "SoftmaxHead",
    "UnblockBackbone",
    "VerificationResult",
    "atomic_torch_save",
    "atomic_write",
    "extract_embeddings",
    "identification_accuracy",
    "images_to_tensor",
    "load_checkpoint",
    "load_faces",
    "load_npz",
    "make_backbone",
    "make_head",
    "make_synthetic_faces",
    "split_per_identity",
    "verification_scores",
    "verify_kfold",
]
