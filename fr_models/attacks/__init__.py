"""Model-inversion attacks on trained FR models, and the privacy metrics that judge them.

Threat models (:mod:`fr_models.attacks.target`): white-box (weights + the DCT/mask transform, gradients through
both) and black-box (queries only). Attacks: white-box inversion with and without a learned image prior
(:mod:`~fr_models.attacks.whitebox`, :mod:`~fr_models.attacks.priors`), black-box output decoding
(:mod:`~fr_models.attacks.blackbox`), and the data-level attack on mixed training inputs
(:mod:`~fr_models.attacks.datalevel`). The judge: :mod:`~fr_models.attacks.evaluator`. Figures:
:mod:`~fr_models.attacks.report`. ``examples/evaluate_privacy.py`` runs them all on a trained model.
"""

from fr_models.attacks.augment import random_augment
from fr_models.attacks.blackbox import OutputDecoder, invert_class_vectors, invert_mean_outputs, train_output_decoder
from fr_models.attacks.datalevel import MixFunction, Unmixer, observe_mixes, train_unmixer, unmix
from fr_models.attacks.evaluator import EvaluationClassifier, EvaluatorNet, attack_metrics, privacy_score, train_evaluator
from fr_models.attacks.metrics import psnr, ssim
from fr_models.attacks.priors import EigenfacePrior, ImagePrior, VAEPrior, fit_eigenfaces, fit_vae
from fr_models.attacks.report import pareto_dominated, plot_pareto, plot_reconstruction_grid
from fr_models.attacks.target import BLACK_BOX, THREAT_MODELS, WHITE_BOX, BlackBoxOracle, TargetModel, load_target
from fr_models.attacks.whitebox import InversionResult, invert, total_variation

#: The attacks ``examples/evaluate_privacy.py`` runs, by name.
ATTACKS: tuple[str, ...] = (
    "whitebox_vae", "whitebox_eigenface", "whitebox_pixels", "blackbox_scores", "blackbox_embeddings", "datalevel",
)

__all__ = [
    "ATTACKS",
    "BLACK_BOX",
    "THREAT_MODELS",
    "WHITE_BOX",
    "BlackBoxOracle",
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
    "fit_eigenfaces",
    "fit_vae",
    "invert",
    "invert_class_vectors",
    "invert_mean_outputs",
    "load_target",
    "observe_mixes",
    "pareto_dominated",
    "plot_pareto",
    "plot_reconstruction_grid",
    "privacy_score",
    "psnr",
    "random_augment",
    "ssim",
    "total_variation",
    "train_evaluator",
    "train_output_decoder",
    "train_unmixer",
    "unmix",
]
