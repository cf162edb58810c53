"""Model-inversion attacks on trained FR models, and the privacy metrics that judge them.

Threat models (:mod:`privacy.attacks.target`): white-box (weights + the DCT/mask transform, gradients through
both) and black-box (queries only). Attacks: white-box inversion with and without a learned image prior
(:mod:`~privacy.attacks.whitebox`, :mod:`~privacy.attacks.priors`), black-box output decoding
(:mod:`~privacy.attacks.blackbox`), and the data-level attack on mixed training inputs
(:mod:`~privacy.attacks.datalevel`). The judge: :mod:`~privacy.attacks.evaluator`. :func:`privacy.evaluate.evaluate_privacy` runs them all on a
trained model (``examples/evaluate_privacy.py`` is its command line).
"""

from privacy.attacks._loop import MIN_UPDATES, Schedule
from privacy.attacks.augment import random_augment
from privacy.attacks.blackbox import OutputDecoder, invert_class_vectors, invert_mean_outputs, train_output_decoder
from privacy.attacks.clustering import ClusterResult, cluster_encodings, cluster_restore, expected_dominant_weight
from privacy.attacks.datalevel import (
    MixFunction,
    Unmixer,
    defence_mix,
    observe_mixes,
    train_unmixer,
    training_mixes,
    unmix,
)
from privacy.attacks.evaluator import EvaluationClassifier, EvaluatorNet, attack_metrics, privacy_score, train_evaluator
from privacy.attacks.metrics import psnr, ssim
from privacy.attacks.priors import EigenfacePrior, ImagePrior, VAEPrior, fit_eigenfaces, fit_vae
from privacy.attacks.target import BLACK_BOX, THREAT_MODELS, WHITE_BOX, BlackBoxOracle, TargetModel, load_target
from privacy.attacks.whitebox import InversionResult, invert, total_variation

#: The attacks ``examples/evaluate_privacy.py`` runs, by name.
ATTACKS: tuple[str, ...] = (
    "whitebox_vae", "whitebox_eigenface", "whitebox_pixels", "blackbox_scores", "blackbox_embeddings", "datalevel",
    "datalevel_cluster",
)

__all__ = [
    "ATTACKS",
    "MIN_UPDATES",
    "Schedule",
    "BLACK_BOX",
    "THREAT_MODELS",
    "WHITE_BOX",
    "BlackBoxOracle",
    "ClusterResult",
    "EigenfacePrior",
    "EvaluationClassifier",
    "EvaluatorNet",
    "ImagePrior",
    "InversionResult",
    "MixFunction",
    "OutputDecoder",
    "TargetModel",
    "Unmixer",
    "VAEPrior",
    "attack_metrics",
    "cluster_encodings",
    "cluster_restore",
    "defence_mix",
    "expected_dominant_weight",
    "fit_eigenfaces",
    "fit_vae",
    "invert",
    "invert_class_vectors",
    "invert_mean_outputs",
    "load_target",
    "observe_mixes",
    "privacy_score",
    "psnr",
    "random_augment",
    "ssim",
    "total_variation",
    "train_evaluator",
    "train_output_decoder",
    "train_unmixer",
    "training_mixes",
    "unmix",
]
