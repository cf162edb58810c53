"""Attack a trained FR model and measure privacy: the model-inversion protocol of GMI / KED-MI / PLG-MI / MIBench.

The model must have been trained on the *private* side of an identity-disjoint split
(:func:`privacy.defences.train_fr_model` with ``public_fraction``, which writes ``split.npz`` beside the model).
The attacker gets the model (white-box: weights and the DCT/mask transform its model card names; black-box:
queries) and the *public* faces only. An evaluation classifier, trained on the private faces in the pixel domain
with another architecture, judges every reconstruction (:mod:`privacy.attacks.evaluator`). Attacks
(:data:`privacy.attacks.ATTACKS`):

* ``whitebox_vae`` / ``whitebox_eigenface``: optimise the latent of a prior learned from the public faces (GMI);
* ``whitebox_pixels``: optimise the pixels, no prior (Fredrikson et al.; a reference point);
* ``blackbox_scores``: a decoder from score vectors to faces, trained by querying public faces, decodes each
  identity's class vector (Yang et al.);
* ``blackbox_embeddings``: the same from embeddings, decoding each identity's mean leaked embedding;
* ``datalevel``: recover the dominant face of each mixed, masked training input (the model's own ``k``; for a
  policy, k drawn as often as the policy chose it).

:func:`evaluate_privacy` writes ``privacy.json`` (metrics per attack, the privacy score, times, settings, and the
model's utility from the ``metrics.json`` beside it), ``reconstructions.png`` and ``reconstructions.npz`` (per
identity, a real private face next to each attack's reconstruction) and the evaluator and VAE prior it trained
(reused by later runs on the same identities). ``examples/evaluate_privacy.py`` is its command line.

>>> AttackBudget(steps=0)
Traceback (most recent call last):
...
ValueError: attack budget: steps must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fr_models.card import ModelCard
from fr_models.data import FaceData, check_identity_split, images_to_tensor, load_faces
from fr_models.system import peak_rss_mib
from fr_models.trainer import CheckpointError, atomic_torch_save, atomic_write, load_checkpoint
from privacy.attacks import (
    ATTACKS,
    BlackBoxOracle,
    EvaluationClassifier,
    InversionResult,
    TargetModel,
    VAEPrior,
    attack_metrics,
    defence_mix,
    fit_eigenfaces,
    fit_vae,
    invert,
    invert_class_vectors,
    invert_mean_outputs,
    load_target,
    observe_mixes,
    privacy_score,
    train_evaluator,
    train_output_decoder,
    train_unmixer,
    unmix,
)
from privacy.attacks._loop import MIN_UPDATES, Schedule
from privacy.attacks.clustering import cluster_restore
from privacy.attacks.evaluator import Judge
from privacy.attacks.pretrained import PretrainedJudge, load_dlib
from privacy.attacks.whitebox import WHITEBOX_LOSSES
from privacy.stats import chance_levels
from privacy.report import plot_reconstruction_grid

__all__ = ["DEFAULT_ATTACKS", "DEFAULT_JUDGES", "JUDGES", "AttackBudget", "data_level_k", "data_level_weights",
           "evaluate_privacy", "exit_status", "format_report"]

#: The judges of :func:`evaluate_privacy`, by name.
JUDGES = ("pretrained", "evaluator")
DEFAULT_JUDGES = JUDGES

DEFAULT_ATTACKS = ("whitebox_vae", "whitebox_pixels", "blackbox_scores", "blackbox_embeddings", "datalevel",
                   "datalevel_cluster")


@dataclass(frozen=True)
class AttackBudget:
    """How hard the attacks try, and how well their judges are trained.

    :param identities: attack the first N private identities (``None``: all).
    :param steps: white-box optimisation steps.
    :param restarts: white-box random starts per identity.
    :param views: random views the white-box objective averages over.
    :param decoder_epochs: black-box decoder training passes.
    :param unmix_epochs: data-level unmixer training passes.
    :param min_updates: fewest updates of every attack network, however few the faces.
    :param evaluator_epochs: the evaluator's training passes over the private faces.
    :param prior_epochs: the VAE prior's training passes over the public faces.
    :param judge_min_updates: fewest updates of the evaluator and the VAE prior, which are trained once and reused
        (``None``: ``min_updates``).
    :param grid_identities: rows of the reconstruction grid.
    :param mix_k: k of the data-level attack (``None``: the model's own: 1 for mask-only, its k for fixed, its k
        set for random / policy).
    :param mix_weights: how often the data-level attack's scheme draws each of ``mix_k`` (``None``: uniformly);
        only with ``mix_k``. How a study of the scheme alone simulates a policy's choices (its ``k_distribution``).
    :param observed_epochs: training passes whose encodings the clustering attack (``datalevel_cluster``) sees.
    :param judged_per_identity: reconstructions judged per identity, drawn at random (seeded) where an attack made
        more (``None``: all); dlib's judge costs about 0.14 s a face, and a data-level attack makes one per face.
    :param eigen_components: the eigenface prior's basis size (at most twice the public faces, less one); it
        bounds what ``whitebox_eigenface`` can reach: on LFW's private faces the pretrained judge recognises
        0.365 of them through 150 components, 0.848 through 400, 0.993 through 1000 (the report's
        ``prior_ceilings``), and the attack on the undefended LFW pixel model (first 20 identities) scored top-1
        0.20, 0.30 and 0.45 by that judge with those bases (cross-entropy objective).
    :param whitebox_loss: the white-box attacks' identity objective: ``"margin"`` (PLG-MI's max-margin loss, the
        identity's logit against the best other one) or ``"ce"`` (cross-entropy). Cross-entropy saturates once the
        target is sure (its softmax reaches 1 long before the image shows the identity); the margin keeps
        pushing. On the undefended LFW pixel model of the page (eigenfaces, 4 restarts x 300 steps x 4 views) the
        pretrained judge's top-1 on its first 20 identities was 0.35 with ``"ce"`` (0.15 with 600 steps) and 0.80
        with ``"margin"``; on all 100, 0.70 (95 % 0.61-0.78) with ``"margin"``.
    """

    identities: int | None = None
    steps: int = 300
    restarts: int = 4
    views: int = 4
    decoder_epochs: int = 20
    unmix_epochs: int = 60
    min_updates: int = MIN_UPDATES
    evaluator_epochs: int = 40
    prior_epochs: int = 60
    judge_min_updates: int | None = None
    grid_identities: int = 8
    mix_k: tuple[int, ...] | None = None
    mix_weights: tuple[float, ...] | None = None
    observed_epochs: int = 10
    judged_per_identity: int | None = 4
    eigen_components: int = 1000
    whitebox_loss: str = "margin"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "whitebox_loss":
                if value not in WHITEBOX_LOSSES:
                    raise ValueError(f"attack budget: whitebox_loss must be one of {list(WHITEBOX_LOSSES)}, got "
                                     f"{value!r}")
                continue
            if f.name in ("identities", "judge_min_updates", "mix_k", "mix_weights", "judged_per_identity") \
                    and value is None:
                continue
            if f.name == "mix_weights":
                weights = tuple(float(w) for w in value)
                object.__setattr__(self, "mix_weights", weights)
                if self.mix_k is None or len(weights) != len(self.mix_k):
                    raise ValueError(f"attack budget: mix_weights needs mix_k and one weight per k, got mix_weights="
                                     f"{list(value)} for mix_k={None if self.mix_k is None else list(self.mix_k)}")
                if min(weights) < 0 or not sum(weights) > 0:
                    raise ValueError(f"attack budget: mix_weights must be >= 0 with a positive sum, got {list(value)}")
                continue
            if f.name == "mix_k":
                object.__setattr__(self, "mix_k", tuple(int(k) for k in value))
                if not self.mix_k or min(self.mix_k) < 1:
                    raise ValueError(f"attack budget: mix_k values must be >= 1, got {list(value)}")
            elif int(value) < (2 if f.name == "identities" else 1):
                raise ValueError(f"attack budget: {f.name} must be >= {2 if f.name == 'identities' else 1}, "
                                 f"got {value}")

    @property
    def judge_updates(self) -> int:
        return self.min_updates if self.judge_min_updates is None else self.judge_min_updates

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for JSON and settings hashes); unset options are left out."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if v is not None}


def data_level_k(card: ModelCard, override: Sequence[int] | None = None) -> list[int] | None:
    """The k values of the model's own defence (``None``: the server sees raw faces, no data-level attack)."""
    if override is not None:
        return [int(k) for k in override]
    if card.input == "pixel":
        return None
    if card.defence == "fixed" and card.k is not None:
        return [int(card.k)]
    if card.defence in ("random", "policy"):
        return list(card.k_values)
    return [1]


def data_level_weights(card: ModelCard, ks: Sequence[int]) -> list[float] | None:
    """How often the model's training chose each of ``ks``: a policy records it (``k_distribution``); ``None``
    (uniform) otherwise. The attacker simulates the defence as it ran, not as it might have."""
    if not card.k_distribution:
        return None
    return [float(card.k_distribution.get(str(k), 0.0)) for k in ks]


def _load_split(model: Path, split: Path | None, faces: FaceData, target: TargetModel) -> tuple[FaceData, FaceData]:
    """The private and public sides of the model's identity split, checked against the model."""
    path = split or model.parent / "split.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no split file {str(path)!r}: train the model with train_fr.py --public-fraction "
                                "(it writes split.npz beside the model) or pass --split")
    with np.load(path) as z:
        if "private_idx" not in z.files or "public_idx" not in z.files:
            raise ValueError(f"{str(path)!r} has no private/public split ({sorted(z.files)}): the model was "
                             "trained on every identity, so no face is left for the attacker; retrain it with "
                             "train_fr.py --public-fraction")
        private_idx, public_idx = z["private_idx"], z["public_idx"]
    check_identity_split(faces.labels, private_idx, public_idx, faces.names)
    priv, pub = faces.subset(private_idx), faces.subset(public_idx)
    if priv.num_classes != target.num_classes:
        raise ValueError(f"the model has {target.num_classes} classes but the split's private side of {faces.source!r} "
                         f"has {priv.num_classes} identities: wrong --data or --split for this model?")
    if target.class_names and priv.names and list(target.class_names) != list(priv.names):
        raise ValueError(f"the model's identities ({target.class_names[:3]}...) are not the split's private side "
                         f"({priv.names[:3]}...): wrong --data or --split for this model?")
    return priv, pub


def _evaluator(path: Path, x: torch.Tensor, y: torch.Tensor, names: list[str], budget: AttackBudget, seed: int,
               device: str, progress: bool) -> EvaluationClassifier:
    """The judge: reused from ``path`` if it was trained on these identities at this size, else trained there."""
    if path.is_file():
        evaluator = EvaluationClassifier.load(path, device)
        if evaluator.class_names != names or evaluator.image_size != tuple(x.shape[-2:]):
            raise ValueError(f"the evaluator {str(path)!r} was trained on other identities or another image "
                             "size; pass a new --evaluator path to train one for this split")
        print(f"evaluator: reused {path} (held-out top-1 {evaluator.val_accuracy:.3f})")
        return evaluator
    t0 = time.perf_counter()
    evaluator = train_evaluator(x, y, names, schedule=Schedule(budget.evaluator_epochs, batch_size=128, seed=seed,
                                                               device=device, progress=progress,
                                                               min_updates=budget.judge_updates))
    evaluator.save(path)
    print(f"evaluator: trained in {time.perf_counter() - t0:.0f} s, held-out top-1 {evaluator.val_accuracy:.3f}")
    return evaluator


def _pretrained(path: Path, x: torch.Tensor, y: torch.Tensor, names: list[str]) -> PretrainedJudge:
    """The pretrained judge with the private faces enrolled: the gallery reused from ``path`` if it holds these
    faces, else embedded (about 0.14 s a face) and saved there."""
    key = PretrainedJudge.key(x, y, names)
    if path.is_file():
        judge = PretrainedJudge.load(path)
        if judge.gallery_key == key:
            print(f"pretrained judge: reused the gallery {path} (its top-1 on the private faces {judge.val_accuracy:.3f})")
            return judge
    t0 = time.perf_counter()
    judge = PretrainedJudge.enrol(x, y, names)
    judge.save(path)
    print(f"pretrained judge: enrolled {len(y)} private faces in {time.perf_counter() - t0:.0f} s, its top-1 on "
          f"them {judge.val_accuracy:.3f} (leave-one-out), saved {path}")
    return judge


def _vae_prior(path: Path, x_pub: torch.Tensor, public_names: list[str], budget: AttackBudget, seed: int,
               device: str, progress: bool) -> VAEPrior:
    """The VAE prior of the public faces: reused from ``path`` if it was fitted to the same public identities at
    the same image size (it depends on nothing else), else trained and saved there."""
    if path.is_file():
        prior, trained_on = VAEPrior.load(path, device)
        if trained_on == list(public_names) and prior.image_size == tuple(x_pub.shape[-2:]):
            print(f"VAE prior: reused {path}")
            return prior
        print(f"VAE prior: {path} was fitted to other public faces; training a new one")
    t0 = time.perf_counter()
    prior = fit_vae(x_pub, schedule=Schedule(budget.prior_epochs, seed=seed, device=device, progress=progress,
                                             min_updates=budget.judge_updates))
    prior.save(path, list(public_names))
    print(f"VAE prior: trained in {time.perf_counter() - t0:.0f} s, saved {path}")
    return prior


@dataclass
class _Attacker:
    """What every attack is given: the target, the public faces, the judged private faces, the budget."""

    target: TargetModel
    x_pub: torch.Tensor
    public_names: list[str]
    x_judged: torch.Tensor
    y_judged: torch.Tensor
    classes: torch.Tensor
    budget: AttackBudget
    prior_path: Path
    seed: int
    device: str
    progress: bool

    def __post_init__(self) -> None:
        self._priors: dict[str, Any] = {}

    def schedule(self, epochs: int) -> Schedule:
        """An attack network's schedule: ``epochs`` passes, at least the budget's ``min_updates``."""
        return Schedule(epochs, seed=self.seed, device=self.device, progress=self.progress,
                        min_updates=self.budget.min_updates)

    def prior(self, kind: str) -> Any:
        """The image prior of a white-box attack, fitted once for every attack that uses it."""
        if kind == "pixels":
            return None
        if kind not in self._priors:
            self._priors[kind] = (
                _vae_prior(self.prior_path, self.x_pub, self.public_names, self.budget, self.seed, self.device,
                           self.progress)
                if kind == "vae" else fit_eigenfaces(self.x_pub, self.budget.eigen_components).to(self.device))
        return self._priors[kind]

    def run(self, attack: str) -> tuple[InversionResult, dict[str, Any]] | str:
        """The attack's reconstructions and its extra figures, or why it was skipped."""
        b = self.budget
        if attack.startswith("whitebox"):
            prior = self.prior(attack.split("_", 1)[1])
            res = invert(self.target, self.classes, prior, restarts=b.restarts, steps=b.steps, views=b.views,
                         loss=b.whitebox_loss, seed=self.seed, progress=self.progress,
                         public_images=self.x_pub if prior is not None else None)
            return res, {"threat_model": "white-box", **res.info,
                         "target_confidence": float(res.target_confidence.mean())}
        if attack.startswith("blackbox"):
            oracle = BlackBoxOracle(self.target, "probabilities" if attack == "blackbox_scores" else "embedding")
            dec = train_output_decoder(oracle, self.x_pub, views_per_image=4, schedule=self.schedule(b.decoder_epochs))
            res = (invert_class_vectors(dec, self.classes, self.target.num_classes) if attack == "blackbox_scores"
                   else invert_mean_outputs(dec, oracle(self.x_judged), self.y_judged))
            return res, {"threat_model": "black-box", **res.info, "queries": oracle.queries}
        card = self.target.card
        ks = data_level_k(card, b.mix_k)
        if ks is None:
            return "a pixel-domain model is trained on the raw faces: the server sees them, there is nothing to recover"
        weights = data_level_weights(card, ks) if b.mix_k is None else \
            (list(b.mix_weights) if b.mix_weights is not None else None)
        mix = defence_mix(ks, weights, card.dirichlet_alpha, card.max_weight)  # the scheme as the model ran it
        transform = self.target.transform  # the white-box transform the model carries
        if attack == "datalevel_cluster":
            decoder = train_unmixer(self.x_pub, transform, defence_mix([1]), schedule=self.schedule(b.unmix_epochs))
            with torch.no_grad():
                mean = transform(self.x_pub.to(self.device)).mean(0)
            res = cluster_restore(self.x_judged.to(self.device), self.y_judged, transform, mix, decoder, mean,
                                  b.observed_epochs, seed=self.seed + 1)
            return res, {"threat_model": "data-level (training run)", "k_values": ks, "k_weights": weights, **res.info}
        unmixer = train_unmixer(self.x_pub, transform, mix, schedule=self.schedule(b.unmix_epochs))
        observed, dominant, weight = observe_mixes(self.x_judged.to(self.device), transform, mix, seed=self.seed + 1)
        res = unmix(unmixer, observed, self.y_judged[dominant.cpu()])
        return res, {"threat_model": "data-level", "k_values": ks, "k_weights": weights,
                     "dominant_weight": float(weight.mean())}


def evaluate_privacy(
    model: str | Path,
    data: str | FaceData,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    budget: AttackBudget = AttackBudget(),
    *,
    split: str | Path | None = None,
    judges: Sequence[str] = DEFAULT_JUDGES,
    evaluator: str | Path | None = None,
    gallery: str | Path | None = None,
    prior: str | Path | None = None,
    out: str | Path = "runs/privacy",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``attacks`` on the model at ``model`` and judge them; writes the outputs of the module docstring.

    :param model: ``fr_model.pt`` (:func:`privacy.defences.train_fr_model` or the env's ``save_fr_model``).
    :param data: the data set the model was trained on (name, ``.npz`` path or faces).
    :param attacks: names from :data:`privacy.attacks.ATTACKS`.
    :param budget: how hard the attacks try.
    :param split: ``npz`` with ``private_idx`` / ``public_idx`` (default: ``split.npz`` beside the model).
    :param judges: names from :data:`JUDGES`, the first heading each attack's figures: ``pretrained`` (dlib's
        face recognizer, the ``judge`` extra; :mod:`privacy.attacks.pretrained`) and ``evaluator`` (trained on
        the private faces; :mod:`privacy.attacks.evaluator`).
    :param evaluator: the evaluator checkpoint to reuse, or where to save a new one (default
        ``<out>/evaluator.pt``).
    :param gallery: the pretrained judge's enrolled private faces to reuse, or where to save them (default
        ``<out>/judge_gallery.pt``).
    :param prior: the VAE prior checkpoint to reuse, or where to save a new one (default ``<out>/vae_prior.pt``).
    :param out: the output folder: ``privacy.json``, the picture, and ``attacks/<attack>.pt``, each attack's figures
        as it finishes, keyed by the model's content (:func:`model_digest`), the budget, the seed, the device and the judges; a rerun of an
        interrupted evaluation reuses the attacks of the same key and computes only the rest.
    :param seed: the attacks' (and new judges') seed.
    :param device: where to attack.
    :param progress: show progress bars.
    :return: the report (as written to ``privacy.json``).
    :raises ValueError: an unknown attack, or a split or evaluator that does not belong to the model.
    """
    _check_names(attacks, judges)
    model, out = Path(model), Path(out)
    torch.manual_seed(seed)
    target = load_target(model, device)
    faces = data if isinstance(data, FaceData) else load_faces(data)
    priv, pub = _load_split(model, None if split is None else Path(split), faces, target)
    size = target.image_size
    x_priv, y_priv = images_to_tensor(priv.images, size), torch.from_numpy(priv.labels)
    n_ids = priv.num_classes if budget.identities is None else min(budget.identities, priv.num_classes)
    classes = torch.arange(n_ids)
    judged = torch.isin(y_priv, classes)
    out.mkdir(parents=True, exist_ok=True)
    names = priv.names or [str(c) for c in range(priv.num_classes)]
    paths = {"evaluator": Path(evaluator) if evaluator is not None else out / "evaluator.pt",
             "pretrained": Path(gallery) if gallery is not None else out / "judge_gallery.pt"}
    panel = _judge_panel(judges, paths, x_priv, y_priv, names, judged, budget, seed, device, progress)
    attacker = _Attacker(target, images_to_tensor(pub.images, size), list(pub.names), x_priv[judged], y_priv[judged],
                         classes, budget, Path(prior) if prior is not None else out / "vae_prior.pt", seed, device,
                         progress)
    grid_ids = classes[: budget.grid_identities]
    cache = _AttackCache(out / "attacks", _run_key(model, budget, seed, device, panel))
    results, shown = _run_attacks(attacker, attacks, panel, grid_ids, cache)
    ceilings = _prior_ceilings(attacker, attacks, panel)
    scored = {k: v for k, v in results.items() if "top1" in v}
    card = target.card
    report: dict[str, Any] = {
        "model": str(model), "data": faces.source, "defence": card.defence, "k": card.k, "input": card.input,
        "private_identities": priv.num_classes, "attacked_identities": n_ids,
        "public_identities": pub.num_classes, "public_images": len(pub.labels),
        "judges": {name: {**j.describe(), "path": str(paths[name])} for name, (j, _) in panel.items()},
        "chance": chance_levels(y_priv.numpy(), priv.num_classes),
        "attacks": results, "privacy_score": privacy_score(scored) if scored else None,
        "prior_ceilings": ceilings,
        "settings": {"attacks": list(attacks), "judges": list(judges), "budget": budget.as_dict(), "seed": seed,
                     "device": device},
        **_utility(model.parent / "metrics.json"),
    }
    if shown:
        real = torch.stack([x_priv[(y_priv == c).nonzero()[0, 0]] for c in grid_ids])
        report["grid"] = _picture(out, real, shown, panel, grid_ids, names,
                                  f"{Path(faces.source).stem}: defence {card.defence}, {card.input} model")
    atomic_write(out / "privacy.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    return report


def _check_names(attacks: Sequence[str], judges: Sequence[str]) -> None:
    """Refuse unknown attacks or judges, and a missing judge extra, before anything runs."""
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}: accepted {', '.join(ATTACKS)}")
    if not judges or any(j not in JUDGES for j in judges) or len(set(judges)) != len(judges):
        raise ValueError(f"judges={list(judges)}: accepted one or more distinct of {', '.join(JUDGES)}")
    if "pretrained" in judges:
        load_dlib()  # the ImportError names the extra


def _utility(metrics_path: Path) -> dict[str, Any]:
    """``{"utility": ...}``: the model's identification figures from its ``metrics.json``, if it has one."""
    if not metrics_path.is_file():
        return {}
    return {"utility": json.loads(metrics_path.read_text()).get("identification")}


def _judge_panel(judges: Sequence[str], paths: dict[str, Path], x: torch.Tensor, y: torch.Tensor, names: list[str],
                 judged: torch.Tensor, budget: AttackBudget, seed: int, device: str,
                 progress: bool) -> dict[str, tuple[Judge, torch.Tensor | None]]:
    """Name -> (judge, the judged private faces' features if already known), in the order of ``judges``: the
    first heads each attack's entry."""
    panel: dict[str, tuple[Judge, torch.Tensor | None]] = {}
    for name in judges:
        if name == "pretrained":
            pre = _pretrained(paths[name], x, y, names)
            assert pre.gallery_features is not None
            panel[name] = (pre, pre.gallery_features[judged])
        else:
            panel[name] = (_evaluator(paths[name], x, y, names, budget, seed, device, progress), None)
    return panel


def _prior_ceilings(attacker: _Attacker, attacks: Sequence[str],
                    panel: dict[str, tuple[Judge, torch.Tensor | None]]) -> dict[str, dict[str, float]]:
    """Per image prior of the white-box attacks run (``vae``, ``eigenface``), each judge's top-1 on the attacked
    identities' private faces (the first ``judged_per_identity`` of each) passed through it (encoded, decoded):
    the most a reconstruction confined to the prior can score, whatever the attack; a white-box figure far below
    it is the attack's weakness, one near it the prior's."""
    out: dict[str, dict[str, float]] = {}
    per_id = attacker.budget.judged_per_identity
    y_all = attacker.y_judged
    keep = torch.cat([(y_all == c).nonzero().view(-1)[:per_id] for c in y_all.unique()])  # the first per identity
    x, y = attacker.x_judged[keep], y_all[keep].numpy()
    for attack in attacks:
        kind = attack.split("_", 1)[1] if attack.startswith("whitebox") else "pixels"
        if kind == "pixels":
            continue
        prior = attacker.prior(kind)
        with torch.no_grad():
            through = torch.cat([prior.decode(prior.encode(chunk.to(attacker.device))).cpu() for chunk in x.split(256)])
        out[kind] = {name: float(np.mean(j.logits(through).argmax(1).numpy() == y)) for name, (j, _) in panel.items()}
        print(f"  {kind} prior's ceiling (private faces through it): "
              + ", ".join(f"{n} top-1 {v:.3f}" for n, v in out[kind].items()), flush=True)
    return out


def model_digest(path: Path) -> str:
    """A digest of a ``torch.save`` file's content: its archive members, without the archive's folder name (the
    temporary file's, for an atomic save) and the per-save ``serialization_id``, so the same weights saved twice
    give the same digest; a file that is not a zip archive is digested as it is."""
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as z:
            for info in sorted(z.infolist(), key=lambda i: i.filename.split("/", 1)[-1]):
                name = info.filename.split("/", 1)[-1]
                if name.endswith("serialization_id"):
                    continue
                h.update(name.encode() + b"\0" + z.read(info) + b"\0")
    except zipfile.BadZipFile:
        h.update(path.read_bytes())
    return h.hexdigest()


def _run_key(model: Path, budget: AttackBudget, seed: int, device: str,
             panel: dict[str, tuple[Judge, torch.Tensor | None]]) -> str:
    """A digest of everything an attack's figures depend on: the model's content, the budget, the seed, the
    device and the judges (their names and galleries' accuracies)."""
    h = hashlib.sha256(model_digest(model).encode())
    h.update(json.dumps({"budget": budget.as_dict(), "seed": seed, "device": device,
                         "judges": {n: j.describe() for n, (j, _) in panel.items()}}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()


@dataclass
class _AttackCache:
    """Each finished attack of a run, kept under ``root`` (``<attack>.pt``: its figures and grid images, with the
    run's key), so an interrupted run redoes only the attacks it had not finished. An entry of another key (another
    model, budget, seed or judge) is ignored and overwritten."""

    root: Path
    key: str

    def get(self, attack: str) -> tuple[dict[str, Any], torch.Tensor] | None:
        path = self.root / f"{attack}.pt"
        if not path.is_file():
            return None
        try:
            state = load_checkpoint(path, "finished attack", ("key", "result", "shown"))
        except CheckpointError:  # an interrupted or foreign file: the attack is redone
            return None
        if state["key"] != self.key:
            return None
        return json.loads(state["result"]), state["shown"]

    def put(self, attack: str, result: dict[str, Any], shown: torch.Tensor) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"key": self.key, "result": json.dumps(result, default=float), "shown": shown},
                          self.root / f"{attack}.pt")


def _run_attacks(attacker: _Attacker, attacks: Sequence[str], panel: dict[str, tuple[Judge, torch.Tensor | None]],
                 grid_ids: torch.Tensor,
                 cache: _AttackCache | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
    """Each attack's judged metrics (or why it was skipped): the first judge's at the top of its entry, every
    judge's under ``judges``; and its reconstructions of the grid's identities. Attacks ``cache`` holds for this
    run are read from it, the others computed and written into it as each finishes."""
    f_judged = {name: f if f is not None else j.features(attacker.x_judged) for name, (j, f) in panel.items()}
    results: dict[str, dict[str, Any]] = {}
    shown: dict[str, torch.Tensor] = {}
    for attack in attacks:
        hit = cache.get(attack) if cache is not None else None
        if hit is not None:
            results[attack], grid = hit
            if "top1" in results[attack]:
                shown[attack] = grid
            print(f"  {attack}: reused from {cache.root}", flush=True)
            continue
        t0 = time.perf_counter()
        # each attack from its own seed, so its figures do not depend on which attacks ran before it (or were reused)
        torch.manual_seed(attacker.seed * len(ATTACKS) + ATTACKS.index(attack))
        outcome = attacker.run(attack)
        if isinstance(outcome, str):
            results[attack] = {"skipped": outcome}
            print(f"  {attack}: skipped ({outcome.split(':')[0]})")
            if cache is not None:
                cache.put(attack, results[attack], torch.empty(0))
            continue
        res, extra = outcome
        made = len(res.classes)
        res = _per_identity(res, attacker.budget.judged_per_identity, attacker.seed)
        by_judge = {name: attack_metrics(j, res.images, res.classes, attacker.x_judged, attacker.y_judged,
                                         f_judged[name], seed=attacker.seed) for name, (j, _) in panel.items()}
        m = next(iter(by_judge.values()))
        results[attack] = {**m, "judges": by_judge, "made": made, "judged": len(res.classes),
                           "seconds": time.perf_counter() - t0,
                           "peak_rss_mb": peak_rss_mib(), **extra}
        shown[attack] = _grid_cells(res, grid_ids)
        if cache is not None:
            cache.put(attack, results[attack], shown[attack])
        print(f"  {attack}: top-1 {m['top1']:.3f} ({m['top1_over_chance']:.1f}x chance), top-5 {m['top5']:.3f}, "
              f"{results[attack]['seconds']:.0f} s", flush=True)
    return results, shown


def _per_identity(res: InversionResult, n: int | None, seed: int) -> InversionResult:
    """At most ``n`` reconstructions per identity, drawn at random (seeded; in their order), the rest dropped."""
    if n is None or int(torch.bincount(res.classes).max()) <= n:
        return res
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand(len(res.classes), generator=gen)
    keep = torch.zeros(len(res.classes), dtype=torch.bool)
    for c in res.classes.unique():
        idx = (res.classes == c).nonzero().squeeze(1)
        keep[idx[keys[idx].argsort()[:n]]] = True
    return dataclasses.replace(res, images=res.images[keep], classes=res.classes[keep],
                               target_confidence=res.target_confidence[keep])


def _verdicts(judge: Judge, shown: dict[str, torch.Tensor], grid_ids: torch.Tensor,
              names: list[str]) -> dict[str, list[str]]:
    """Per attack, per grid identity: ``"= <identity>"`` where the judge names the reconstruction's own identity,
    ``"≠ <whom it names>"`` where not, ``""`` where the attack made no reconstruction of it."""
    out: dict[str, list[str]] = {}
    for attack, imgs in shown.items():
        ok = torch.isfinite(imgs.flatten(1)).all(1)
        labels = [""] * len(imgs)
        if bool(ok.any()):
            pred = judge.logits_and_features(imgs[ok])[0].argmax(1)
            for r, p in zip(ok.nonzero().squeeze(1).tolist(), pred.tolist()):
                labels[r] = f"= {names[p]}" if p == int(grid_ids[r]) else f"≠ {names[p]}"
        out[attack] = labels
    return out


def _picture(out: Path, real: torch.Tensor, shown: dict[str, torch.Tensor], panel: dict[str, tuple[Judge, Any]],
             grid_ids: torch.Tensor, names: list[str], title: str) -> dict[str, Any]:
    """``reconstructions.png`` (real faces beside each attack's, each labelled with the first judge's verdict) and
    the same images as uint8 arrays; returns the picture's rows and verdicts (the report's ``grid``)."""
    first_name, (first, _) = next(iter(panel.items()))
    verdicts = _verdicts(first, shown, grid_ids, names)
    rows = [names[c] for c in grid_ids]
    plot_reconstruction_grid(real, shown, rows, out / "reconstructions.png",
                             f"{title}; under each face the {first_name} judge's verdict", verdicts)
    as_uint8 = {name: (imgs.nan_to_num(0.0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                for name, imgs in {"real": real, **shown}.items()}
    atomic_write(out / "reconstructions.npz", lambda tmp: np.savez_compressed(tmp, **as_uint8))
    return {"identities": rows, "judge": first_name, "verdicts": verdicts}


def _grid_cells(res: InversionResult, grid_ids: torch.Tensor) -> torch.Tensor:
    """One reconstruction per grid identity (NaN where the attack made none for it)."""
    cells = torch.full((len(grid_ids), *res.images.shape[1:]), float("nan"))
    for r, c in enumerate(grid_ids):
        hit = (res.classes == c).nonzero()
        if len(hit):
            cells[r] = res.images[hit[0, 0]]
    return cells


def format_report(report: dict[str, Any]) -> str:
    """The report's attacks as a table, and its privacy score."""
    lines = [f"{'attack':<22}{'top-1':>7}{'95 % interval':>15}{'x chance':>9}{'top-5':>7}{'KNN':>7}{'PSNR':>7}"
             f"{'SSIM':>7}{'s':>7}"]
    for name, m in report["attacks"].items():
        if "top1" in m:
            lo, hi = m.get("intervals", {}).get("top1", (float("nan"), float("nan")))
            lines.append(f"{name:<22}{m['top1']:>7.3f}{f'{lo:.3f}-{hi:.3f}':>15}{m['top1_over_chance']:>9.1f}{m['top5']:>7.3f}"
                         f"{m['knn_dist']:>7.3f}{m['psnr']:>7.2f}{m['ssim']:>7.3f}{m['seconds']:>7.0f}")
    if report["privacy_score"] is not None:
        lines.append(f"privacy score {report['privacy_score']:.3f} (1 = nothing recognisable recovered)")
    return "\n".join(lines)


def exit_status(report: dict[str, Any]) -> tuple[int, str]:
    """The exit code of a run and why: 0 when at least one attack was measured and its figures are finite, else 1:
    a run that measured nothing, or measured NaN, must not look like a success to a script or CI."""
    scored = {k: v for k, v in report["attacks"].items() if "top1" in v}
    if not scored:
        return 1, "no attack measured anything (every one was skipped)"
    bad = [k for k, v in scored.items() if not all(math.isfinite(float(v[m])) for m in ("top1", "top5", "knn_dist"))]
    if bad:
        return 1, f"non-finite figures from {', '.join(bad)}"
    return 0, ""
