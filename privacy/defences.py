"""Train an FR model under a defence and measure its utility: the first half of every privacy comparison.

A defence is a :class:`DefenceSpec`; :func:`train_fr_model` trains the recipe's model on a data set under it,
evaluates it (closed-set identification on held-out faces of the training identities, and for LFW the 10-fold
verification on the official pairs) and writes ``fr_model.pt`` (with its :class:`~fr_models.card.ModelCard`),
``split.npz`` and ``metrics.json``. ``examples/train_fr.py`` is its command line.

Defences: ``none`` (pixels, no masking, no mixing); ``dct`` (the block DCT with every channel kept: the undefended
frequency-domain model); ``mask`` (frequency masking, no mixing); ``fixed`` (masking + k-way mixing with a fixed
k); ``random`` (k drawn per sample from ``k_values``); ``policy`` (a saved mixing agent chooses k, through the
env); and two standard model-inversion defences on the undefended frequency input (all channels, as ``dct``):
``dpsgd`` (DP-SGD through Opacus, :mod:`fr_models.dp`; batch norms become group norms) and ``nls`` (negative label
smoothing, Struppek et al. 2024).

>>> DefenceSpec("fixed", k=3).input
'masked_dct'
>>> DefenceSpec("nls", smoothing=0.1)
Traceback (most recent call last):
...
ValueError: nls: smoothing must lie in (-1, 0) for negative label smoothing, got 0.1
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fr_models import FRTrainer, extract_embeddings, identification_accuracy
from fr_models.data import FaceData, load_lfw_pairs, split_identities, split_per_identity
from fr_models.dp import fit_dp
from fr_models.evaluation import balanced_accuracy, chance_levels, verification_scores, verify_kfold
from fr_models.recipes import FRRecipe
from fr_models.trainer import atomic_write
from fr_models.training import calibration_subset, channel_stats, fit
from mixup_env import ChannelMask, FrequencyMasking, mix_batch
from mixup_env.prepared import transform_faces
from mixup_env.transform import model_card
from privacy.stats import bootstrap_interval

__all__ = ["ALL_CHANNELS", "DEFENCES", "POLICY_ALGOS", "POLICY_MODES", "DefenceSpec", "PolicySpec", "negative_smoothing",
           "train_fr_model", "verify_lfw"]

DEFENCES = ("none", "dct", "mask", "fixed", "random", "policy", "dpsgd", "nls")
#: defences whose input is the block DCT with every channel kept (no masking)
ALL_CHANNELS = ("dct", "dpsgd", "nls")
#: the agents a ``policy`` defence may load
POLICY_ALGOS = ("reinforce", "ppo", "a2c", "sac")
#: How a policy defence trains its FR model (:class:`PolicySpec`'s ``mode``).
POLICY_MODES = ("frozen", "cotrain")


@dataclass(frozen=True)
class PolicySpec:
    """A mixing agent that chooses k through the env.

    :param path: the saved agent's file (``Reinforce.save`` or an SB3 ``.zip``; an SB3 model trained with
        ``--normalize`` keeps its observation statistics beside it); ``frozen`` mode only.
    :param algo: one of :data:`POLICY_ALGOS`.
    :param env_id: the registered env id it acts on.
    :param reward: the env reward a co-trained agent learns from (a registered name; ``cotrain`` mode only).
    :param validation_fraction: the env's validation split, for a reward that reads it (``constrained``).
    :param mode: one of :data:`POLICY_MODES`: ``"frozen"``, the saved agent run greedily over a fresh FR run;
        ``"cotrain"``, the paper's way, a fresh agent trained over the FR run itself, alternating with the FR
        updates (:func:`agents.cotrain.cotrain`); the co-trained FR model is the one kept.
    """

    path: Path | None = None
    algo: str = "reinforce"
    env_id: str = "mixup_env/FrequencyMixupPerSample-v0"
    mode: str = "frozen"
    reward: str = "fr_loss"
    validation_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path))
        if self.algo not in POLICY_ALGOS:
            raise ValueError(f"policy algo {self.algo!r} is unknown: accepted {', '.join(POLICY_ALGOS)}")
        if self.mode not in POLICY_MODES:
            raise ValueError(f"policy mode {self.mode!r} is unknown: accepted {', '.join(POLICY_MODES)}")
        if self.mode == "frozen" and self.path is None:
            raise ValueError("a frozen policy needs the saved agent's path (or mode='cotrain' to train one over the "
                             "FR run)")


@dataclass(frozen=True)
class DefenceSpec:
    """One defence and its settings (those of other defences are ignored).

    :param name: one of :data:`DEFENCES`.
    :param k: images per mix (``fixed``).
    :param k_values: the k set (``random``, ``policy``).
    :param policy: the agent (``policy``; required there).
    :param noise_multiplier: DP-SGD noise over the clipping norm (``dpsgd``).
    :param max_grad_norm: DP-SGD per-sample clipping norm (``dpsgd``).
    :param delta: the delta of the reported epsilon (``dpsgd``).
    :param smoothing: the final, negative label smoothing, in ``(-1, 0)`` (``nls``).
    """

    name: str = "mask"
    k: int = 3
    k_values: tuple[int, ...] = (2, 3, 4, 5, 6)
    policy: PolicySpec | None = None
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    smoothing: float = -0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "k_values", tuple(int(k) for k in self.k_values))
        if self.name not in DEFENCES:
            raise ValueError(f"unknown defence {self.name!r}: accepted {', '.join(DEFENCES)}")
        if self.name == "fixed" and self.k < 1:
            raise ValueError(f"fixed: k must be >= 1, got {self.k}")
        if self.name in ("random", "policy") and (not self.k_values or min(self.k_values) < 1):
            raise ValueError(f"{self.name}: k_values must be a non-empty set of k >= 1, got {list(self.k_values)}")
        if self.name == "policy" and self.policy is None:
            raise ValueError("policy: a PolicySpec (the saved agent) is required")
        if self.name == "nls" and not -1 < self.smoothing < 0:
            raise ValueError(f"nls: smoothing must lie in (-1, 0) for negative label smoothing, got {self.smoothing}")
        if self.name == "dpsgd" and not (self.noise_multiplier > 0 and self.max_grad_norm > 0 and 0 < self.delta < 1):
            raise ValueError("dpsgd: noise_multiplier and max_grad_norm must be > 0 and delta in (0, 1), got "
                             f"{self.noise_multiplier}, {self.max_grad_norm}, {self.delta}")

    @property
    def input(self) -> str:
        """What the model reads: ``"pixel"`` (``none``) or ``"masked_dct"`` (every other defence)."""
        return "pixel" if self.name == "none" else "masked_dct"

    @property
    def dropped_channels(self) -> tuple[int, ...] | None:
        """``()`` (every channel kept) for :data:`ALL_CHANNELS`, ``None`` (the default mask) otherwise."""
        return () if self.name in ALL_CHANNELS else None

    def recipe(self, recipe: FRRecipe) -> FRRecipe:
        """``recipe`` with a backbone that reads this defence's input: a frequency-only backbone becomes
        ``pixel`` for ``none``, the ``pixel`` backbone becomes ``grid`` for the others (``resnet`` reads both)."""
        if self.name == "none" and recipe.backbone in ("grid", "unblock"):
            return recipe.replace(backbone="pixel")  # a legacy frequency recipe: its pixel counterpart
        if self.name != "none" and recipe.backbone == "pixel":
            return recipe.replace(backbone="grid")
        return recipe

    def as_dict(self) -> dict[str, Any]:
        """The settings that matter for this defence, as plain values (for JSON and settings hashes)."""
        d: dict[str, Any] = {"name": self.name}
        if self.name == "fixed":
            d["k"] = self.k
        if self.name in ("random", "policy"):
            d["k_values"] = list(self.k_values)
        if self.policy is not None and self.name == "policy":
            d["policy"] = {"algo": self.policy.algo, "env_id": self.policy.env_id}
            if self.policy.mode != "frozen":
                d["policy"].update(mode=self.policy.mode, reward=self.policy.reward,
                                   validation_fraction=self.policy.validation_fraction)
        if self.name == "dpsgd":
            d.update(noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm, delta=self.delta)
        if self.name == "nls":
            d["smoothing"] = self.smoothing
        return d


@dataclass(frozen=True)
class _Prepared:
    """A data set ready for training: model inputs of every face, the splits, and how inputs were made."""

    faces: FaceData
    inputs: torch.Tensor
    train_idx: np.ndarray
    test_idx: np.ndarray
    masking: FrequencyMasking
    prepare: Callable[[np.ndarray], torch.Tensor]
    flip: Callable[[torch.Tensor], torch.Tensor]
    split: dict[str, np.ndarray] = field(default_factory=dict)


def _prepare(data: FaceData, defence: DefenceSpec, recipe: FRRecipe, seed: int, split_seed: int | None,
             public_fraction: float | None, test_fraction: float, colour: str | None, storage: str,
             device: str) -> _Prepared:
    faces, split = data, {}
    if public_fraction is not None:
        split["private_idx"], split["public_idx"] = split_identities(
            data.labels, public_fraction, seed if split_seed is None else split_seed)
        faces = data.subset(split["private_idx"])
    train_idx, test_idx = split_per_identity(faces.labels, test_fraction, seed)
    masking = FrequencyMasking(ChannelMask(defence.dropped_channels, planes=faces.planes), recipe.upsample,
                               colour).to(device)
    pixel = defence.input == "pixel"
    if not pixel:
        masking.output_size(recipe.image_size or faces.image_shape)  # a clear error for a size that does not fit
    def prepare(images: np.ndarray) -> torch.Tensor:
        return transform_faces(images, None if pixel else masking, recipe.image_size, getattr(torch, storage), device)

    flip = (lambda x: x.flip(-1)) if pixel else masking.hflip
    return _Prepared(faces, prepare(faces.images), train_idx, test_idx, masking, prepare, flip, split)


def _train(p: _Prepared, defence: DefenceSpec, recipe: FRRecipe, seed: int, recalibrate_norms: bool,
           device: str, progress: bool) -> tuple[FRTrainer, list[float], dict[str, Any]]:
    """Train under a non-policy defence; returns the trainer, the epochs' seconds and extra metrics."""
    faces, pixel = p.faces, defence.input == "pixel"
    x_train = p.inputs[p.train_idx]
    y_train = torch.from_numpy(faces.labels).to(device)[p.train_idx]
    config = recipe.fr_config(p.inputs.shape[1:], faces.num_classes, "pixel" if pixel else "frequency",
                              "group" if defence.name == "dpsgd" else "batch")
    trainer = FRTrainer(config, device, seed=seed)
    trainer.backbone.set_input_stats(*channel_stats(x_train))
    flip = p.flip if recipe.hflip else None
    extra: dict[str, Any] = {}
    if defence.name == "dpsgd":
        history = fit_dp(trainer, x_train, y_train, recipe.epochs, recipe.batch_size, seed, defence.noise_multiplier,
                         defence.max_grad_norm, defence.delta, flip=flip, progress=progress)
        extra["dp"] = {k: v for k, v in history.items() if k not in ("epoch_seconds", "epoch_losses")}
    else:
        updates = recipe.epochs * (len(p.train_idx) // recipe.batch_size)
        mix = (_mixing(defence, faces.num_classes, device) if defence.name in ("fixed", "random") else
               negative_smoothing(defence.smoothing, faces.num_classes, updates) if defence.name == "nls" else None)
        # a shift by one map position is 8 / upsample pixels of the face: pixel models shift by that distance
        max_shift = recipe.max_shift * (8 // recipe.upsample if pixel and recipe.backbone == "resnet" else 1)
        history = fit(trainer, x_train, y_train, recipe.epochs, recipe.batch_size, seed, mix=mix, flip=flip,
                      progress=progress, max_shift=max_shift)
    # batch-norm statistics of clean training faces, not of the mixes (a no-op for DP-SGD's group norms)
    if recalibrate_norms:
        calib = torch.from_numpy(calibration_subset(len(x_train), seed)).to(device)
        trainer.recalibrate_norms(x_train[calib])
    return trainer, list(history["epoch_seconds"]), extra


def _mixing(defence: DefenceSpec, num_classes: int, device: str):
    """The ``fixed`` / ``random`` defence as a :data:`fr_models.training.MixFn`."""
    ks = torch.tensor(defence.k_values, device=device)

    def mix(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        k = defence.k if defence.name == "fixed" else ks[torch.randint(len(ks), (len(y),), generator=gen, device=device)]
        r = mix_batch(x, y, k, num_classes, 1.0, gen)
        return r.inputs, r.soft_labels

    return mix


def negative_smoothing(final: float, num_classes: int, updates: int):
    """Negative label smoothing as a :data:`fr_models.training.MixFn` (the faces are left as they are): soft labels
    ``(1 - a) * onehot + a / C``, ``a`` ramped linearly from 0 to ``final`` over the first half of ``updates`` and
    kept there (Struppek et al. 2024 start from positive or zero smoothing and turn negative during training)."""
    step = [0]

    def smooth(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a = final * min(1.0, step[0] / max(1.0, updates / 2))
        step[0] += 1
        onehot = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)
        return x, (1 - a) * onehot + a / num_classes

    return smooth


def _train_with_policy(p: _Prepared, defence: DefenceSpec, recipe: FRRecipe, seed: int, test_fraction: float,
                       colour: str | None, storage: str, device: str) -> tuple[FRTrainer, list[float], dict[str, Any]]:
    """An agent chooses k through the env for ``epochs`` worth of FR updates, a saved one run greedily (``frozen``)
    or a fresh one trained over the run (``cotrain``); the extra metrics record how often it chose each k (over
    every mixed face)."""
    import gymnasium as gym

    from agents import ALGORITHMS, Reinforce, load_obs_normalizer, run_episode

    assert defence.policy is not None
    steps = recipe.epochs * (len(p.train_idx) // recipe.batch_size)
    learning = ({"reward": defence.policy.reward, "validation_fraction": defence.policy.validation_fraction}
                if defence.policy.mode == "cotrain" else {})  # a frozen agent only acts: no reward is read
    env = gym.make(defence.policy.env_id, data=p.faces, k_values=defence.k_values, episode_steps=steps, **learning,
                   eval_every=steps, test_fraction=test_fraction, split_seed=seed, device=device, recipe=recipe,
                   batch_size=recipe.batch_size, colour=colour, storage=storage)
    path, algo = defence.policy.path, defence.policy.algo
    if defence.policy.mode == "cotrain":
        from agents import make_agent
        from agents.cotrain import cotrain

        t0 = time.perf_counter()
        result = cotrain((lambda e: Reinforce(e, seed=seed)) if algo == "reinforce" else
                         (lambda e: make_agent(algo, e, seed=seed)), env, seed=seed)
        per_epoch = (time.perf_counter() - t0) / recipe.epochs
        print(f"  policy {algo}: co-trained over the FR run ({result.steps} FR updates)")
        return result.trainer, [per_epoch] * recipe.epochs, {"k_distribution": result.k_distribution,
                                                             "exposure": result.exposure}
    if algo == "reinforce":
        agent, normalize_obs = Reinforce.load(path, env), None
    else:  # an SB3 model trained with --normalize sees observations through its saved statistics
        agent, normalize_obs = ALGORITHMS[algo].load(path), load_obs_normalizer(path, env)
    t0 = time.perf_counter()
    episode = run_episode(agent, env, seed=seed, normalize_obs=normalize_obs)
    print(f"  policy {path} ({algo}): observations "
          f"{'normalised by its saved VecNormalize statistics' if normalize_obs else 'as the env gives them'}")
    per_epoch = (time.perf_counter() - t0) / recipe.epochs
    ks, counts = np.unique(np.concatenate([np.asarray(i["k_per_sample"]).reshape(-1) for i in episode.infos]),
                           return_counts=True)
    dist = {str(int(k)): int(c) / int(counts.sum()) for k, c in zip(ks, counts)}
    return env.unwrapped.trainer, [per_epoch] * recipe.epochs, {"k_distribution": dist}


def verify_lfw(trainer: FRTrainer, faces: FaceData, prepare: Callable[[np.ndarray], torch.Tensor], folder: Path,
               progress: bool, flip: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """10-fold verification on the official pairs: all pairs, and apart those whose identities were not trained on
    (with ``flip``, on flip-test embeddings)."""
    pairs_data = load_lfw_pairs(folder)
    p = pairs_data.pairs
    emb = extract_embeddings(trainer.backbone, prepare(pairs_data.images), progress=progress, flip=flip)
    scores = verification_scores(emb[p.idx1], emb[p.idx2])
    trained = list(set(faces.names))
    names = np.asarray(pairs_data.names)
    unseen = ~(np.isin(names[pairs_data.labels[p.idx1]], trained) | np.isin(names[pairs_data.labels[p.idx2]], trained))
    out: dict[str, Any] = {
        "note": "'all' includes pairs of identities seen in training; 'unseen_identities' excludes every pair with an "
                "identity from the training set (all 158 training identities occur in the LFW pairs)",
        "all": verify_kfold(scores, p.same, p.fold).as_dict()}
    if unseen.sum() and p.same[unseen].any() and (~p.same[unseen]).any():
        out["unseen_identities"] = verify_kfold(scores[unseen], p.same[unseen], p.fold[unseen]).as_dict()
    return out


def _utility(trainer: FRTrainer, p: _Prepared, flip_test: bool, device: str, progress: bool) -> dict[str, Any]:
    """Identification of held-out faces of the training identities (top-1 with its bootstrap 95 % interval over
    the test faces), beside its chance levels."""
    test_flip = p.flip if flip_test else None
    emb = extract_embeddings(trainer.backbone, p.inputs[p.test_idx], progress=progress, device=device, flip=test_flip)
    trainer.head.eval()
    with torch.no_grad():
        logits = trainer.head.logits(emb.to(device)).cpu()
    y_test = p.faces.labels[p.test_idx]
    chance = chance_levels(p.faces.labels[p.train_idx], y_test, p.faces.num_classes)
    hits = (logits.argmax(1).numpy() == y_test).astype(np.float64)  # top-1 exactly as identification_accuracy's
    out: dict[str, Any] = {
        "identification": {**identification_accuracy(logits, y_test), "balanced": balanced_accuracy(logits, y_test),
                           "top1_interval": list(bootstrap_interval(hits, seed=0))},
        "chance": chance, "chance_top1": chance["uniform"], "flip_test": bool(flip_test)}
    if Path(p.faces.source).name == "lfw.npz":
        out["verification"] = verify_lfw(trainer, p.faces, p.prepare, Path(p.faces.source).parent, progress, test_flip)
    return out


def train_fr_model(
    data: FaceData,
    defence: DefenceSpec,
    recipe: FRRecipe,
    out: str | Path,
    *,
    seed: int = 0,
    split_seed: int | None = None,
    public_fraction: float | None = None,
    test_fraction: float = 0.2,
    colour: str | None = None,
    storage: str = "float32",
    recalibrate_norms: bool = True,
    flip_test: bool = True,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``recipe``'s model on ``data`` under ``defence``, evaluate it, and write ``fr_model.pt``, ``split.npz``
    and ``metrics.json`` into ``out``.

    :param data: the faces.
    :param defence: the defence.
    :param recipe: the model and training settings (its backbone is adapted to the defence's input, see
        :meth:`DefenceSpec.recipe`).
    :param out: the output folder.
    :param seed: the model's initialisation, batch order, mixing and train/test split.
    :param split_seed: the seed of the private/public identity split (default ``seed``).
    :param public_fraction: hold out this fraction of identities as the attacker's public faces (identity-disjoint,
        not trained on; ``split.npz`` records both sides as ``private_idx`` / ``public_idx``). ``None``: train on
        every identity.
    :param test_fraction: held-out share of each training identity's faces.
    :param colour: the transform's colour space (default: grey for grey faces, YCbCr for colour ones).
    :param storage: dtype of the precomputed inputs, ``"float32"`` or ``"float16"``.
    :param recalibrate_norms: after training, re-estimate batch-norm statistics on clean training faces.
    :param flip_test: evaluate on flip-test embeddings (:func:`fr_models.extract_embeddings`).
    :param device: where to train.
    :param progress: show progress bars.
    :return: the metrics (as written to ``metrics.json``).
    :raises ValueError: a size the transform cannot take, a backbone that does not read the defence's input.
    """
    recipe = defence.recipe(recipe)
    torch.manual_seed(seed)
    p = _prepare(data, defence, recipe, seed, split_seed, public_fraction, test_fraction, colour, storage, device)
    if defence.name == "policy":
        trainer, epoch_seconds, extra = _train_with_policy(p, defence, recipe, seed, test_fraction, colour, storage,
                                                           device)
    else:
        trainer, epoch_seconds, extra = _train(p, defence, recipe, seed, recalibrate_norms, device, progress)
    pixel = defence.input == "pixel"
    trainer.card = model_card(None if pixel else p.masking, recipe.image_size or p.faces.image_shape,
                              class_names=p.faces.names, defence=defence.name,
                              k=defence.k if defence.name == "fixed" else None, k_values=defence.k_values,
                              k_distribution=extra.get("k_distribution", {}))
    metrics: dict[str, Any] = {
        "data": p.faces.source, "defence": defence.name, "backbone": recipe.backbone, "head": recipe.head,
        "image_size": recipe.image_size, "epochs": recipe.epochs, "num_identities": p.faces.num_classes,
        "train_images": len(p.train_idx), "test_images": len(p.test_idx),
        "public_identities": int(len(np.unique(data.labels[p.split["public_idx"]]))) if p.split else 0,
        **_utility(trainer, p, flip_test, device, progress),
        "recipe": {**recipe.as_dict(), "upsample": None if pixel else recipe.upsample,
                   "colour": None if pixel else p.masking.colour, "storage": storage},
        "seconds_per_epoch": float(np.median(epoch_seconds)), "epoch_seconds": [float(t) for t in epoch_seconds],
        "updates": trainer.updates, **extra,
        "settings": {"defence": defence.as_dict(), "seed": seed, "split_seed": split_seed,
                     "public_fraction": public_fraction, "test_fraction": test_fraction,
                     "recalibrate_norms": recalibrate_norms, "device": device},
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trainer.save(out / "fr_model.pt")
    atomic_write(out / "split.npz", lambda tmp: np.savez(tmp, train_idx=p.train_idx, test_idx=p.test_idx, seed=seed,
                                                         **p.split))
    atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2)))
    return metrics
