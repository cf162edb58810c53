"""The judge of every attack: an independent evaluation classifier, and the privacy metrics read through it.

Protocol (GMI, KED-MI, PLG-MI, MIBench): the evaluator is trained on the *private* identities' images, in the
pixel domain, with an architecture unlike the target's (here a residual CNN with global pooling; the targets are
plain strided CNNs on pixels or on frequency channels). It never sees a public identity: its classes are the
private identities, one to one. An attack succeeds on identity ``c`` when the evaluator calls its reconstruction
``c``.

Metrics of :func:`attack_metrics`, per attack:

* ``top1`` / ``top5``: evaluator accuracy on the reconstructions (chance ``1/C`` and ``5/C``), and
  ``top1_over_chance``;
* ``knn_dist``: for each reconstruction, the smallest distance in the evaluator's (L2-normalised, so in
  ``[0, 2]``) feature space to a private image of its identity, averaged; ``knn_dist_other`` is the same to the
  private images of every *other* identity (a reconstruction that shows the person is closer to its own);
* ``psnr`` / ``ssim``: to the most similar private image of the identity (the largest over its images).

The single figure, :func:`privacy_score`, is defined there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fr_models.trainer import atomic_torch_save, seeded
from privacy.attacks._loop import Schedule, load_tagged, update
from privacy.attacks.augment import random_augment
from privacy.attacks.metrics import psnr, ssim
from privacy.stats import bootstrap_interval, chance_levels

__all__ = ["EvaluationClassifier", "Judge", "EvaluatorNet", "attack_metrics", "privacy_score", "train_evaluator"]


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class EvaluatorNet(nn.Module):
    """A small residual CNN: a stem, four stride-2 residual stages, global average pooling, a feature layer.

    :param in_channels: colour planes.
    :param num_classes: private identities.
    :param widths: widths of the stem and of the four stages.
    :param feature_dim: size of the feature vector the KNN distance is measured in.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (16, 32, 64, 128, 128),
                 feature_dim: int = 128) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"the evaluator takes 5 widths (stem + 4 stages), got {list(widths)}")
        w = [int(v) for v in widths]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(*[_ResBlock(w[i], w[i + 1], 2) for i in range(4)])
        self.feature = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(w[4], feature_dim), nn.BatchNorm1d(feature_dim))
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, feature_dim)`` features of images ``(N, C, H, W)`` in ``[0, 1]``."""
        h = self.stages(self.stem((x - 0.5) / 0.25))
        return self.feature(F.adaptive_avg_pool2d(h, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` logits."""
        return self.classifier(self.features(x))


class Judge(Protocol):
    """What :func:`attack_metrics` asks of a judge (the in-house evaluator and the pretrained judge have it)."""

    num_classes: int

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def features(self, images: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class EvaluationClassifier:
    """A trained evaluator and what it was trained on.

    :ivar net: the network (kept in eval mode).
    :ivar image_size: ``(H, W)`` it reads.
    :ivar class_names: the private identities, in label order.
    :ivar val_accuracy: top-1 on private images held out from its training (``nan`` if none were).
    """

    net: EvaluatorNet
    image_size: tuple[int, int]
    class_names: list[str]
    val_accuracy: float = float("nan")
    name: str = "in_house_evaluator"

    @property
    def num_classes(self) -> int:
        return int(self.net.classifier.out_features)

    @torch.no_grad()
    def _run(self, images: torch.Tensor, fn: str, batch_size: int = 256) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"the evaluator reads (N, C, {self.image_size[0]}, {self.image_size[1]}) images, "
                             f"got {tuple(images.shape)}")
        self.net.eval()
        dev = next(self.net.parameters()).device
        out = [getattr(self.net, fn)(images[i : i + batch_size].to(dev)).cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(out)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` logits, no gradients."""
        return self._run(images, "forward")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, feature_dim)`` L2-normalised features, no gradients."""
        return F.normalize(self._run(images, "features"), dim=1)

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`logits` and :meth:`features` of ``images`` (what :func:`attack_metrics` asks of a judge)."""
        return self.logits(images), self.features(images)

    def describe(self) -> dict[str, Any]:
        """What a report records of the judge: name, identities, held-out top-1 on the real private faces."""
        return {"name": self.name, "identities": self.num_classes, "accuracy_on_private_faces": self.val_accuracy}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (load with :meth:`load`, ``weights_only=True``)."""
        net = self.net
        widths = [int(net.stem[0].out_channels)] + [int(s.body[0].out_channels) for s in net.stages]
        return atomic_torch_save({
            "kind": "evaluation_classifier", "state": net.state_dict(), "in_channels": int(net.stem[0].in_channels),
            "widths": widths, "feature_dim": int(net.classifier.in_features), "num_classes": self.num_classes,
            "image_size": list(self.image_size), "class_names": list(self.class_names), "val_accuracy": self.val_accuracy,
        }, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> EvaluationClassifier:
        """Read an evaluator written by :meth:`save`.

        :raises ValueError: the file is not an evaluator checkpoint.
        """
        state = load_tagged(path, "evaluation_classifier", "evaluator checkpoint (EvaluationClassifier.save)", device)
        net = EvaluatorNet(state["in_channels"], state["num_classes"], tuple(state["widths"]), state["feature_dim"])
        net.load_state_dict(state["state"])
        return cls(net.to(device).eval(), tuple(state["image_size"]), list(state["class_names"]),  # type: ignore[arg-type]
                   float(state["val_accuracy"]))


def train_evaluator(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str] | None = None,
    holdout: float = 0.1,
    widths: tuple[int, ...] = (16, 32, 64, 128, 128),
    schedule: Schedule = Schedule(40, batch_size=128),
) -> EvaluationClassifier:
    """Train the evaluation classifier on the private images.

    Class-balanced batches (each image drawn with probability proportional to ``1 / its identity's count``, so
    the evaluator has no prior for the largest identities) and random views (:func:`random_augment`: shifts,
    zoom, rotation, mirror, brightness, contrast); AdamW with a cosine schedule and label smoothing 0.1.

    :param images: ``(N, C, H, W)`` private images in ``[0, 1]``.
    :param labels: ``(N,)`` private identities ``0..C-1``.
    :param class_names: names of the identities (for reports).
    :param holdout: fraction of each identity's images held out to measure :attr:`EvaluationClassifier.val_accuracy`
        (``0``: train on all of them).
    :param widths: network widths (see :class:`EvaluatorNet`).
    :param schedule: passes (of ``N`` draws each), images per update, the peak learning rate, the seed of the
        initialisation, order and views, the device, progress and the fewest updates.
    """
    labels = torch.as_tensor(labels).long().cpu()
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"need images (N, C, H, W) and N labels, got {tuple(images.shape)} and {tuple(labels.shape)}")
    num_classes = int(labels.max()) + 1
    if num_classes < 2:
        raise ValueError(f"the evaluator needs at least 2 private identities, got {num_classes}")
    from fr_models.data import split_per_identity

    if holdout > 0:
        train_idx, val_idx = split_per_identity(labels.numpy(), holdout, schedule.seed)
    else:
        train_idx, val_idx = np.arange(len(labels)), np.empty(0, dtype=np.int64)
    device, batch_size = schedule.device, schedule.batch_size
    gen = torch.Generator().manual_seed(schedule.seed)
    with seeded(schedule.seed):
        net = EvaluatorNet(images.shape[1], num_classes, widths).to(device)
    x, y = images[train_idx].to(device), labels[train_idx].to(device)
    weights = 1.0 / torch.bincount(y, minlength=num_classes).float()[y].cpu()
    opt = torch.optim.AdamW(net.parameters(), lr=schedule.lr, weight_decay=5e-4)
    updates = schedule.updates(len(x))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, schedule.lr, total_steps=updates, pct_start=0.15)
    net.train()
    for _ in tqdm(range(updates), desc="evaluator", unit="update", disable=not schedule.progress):
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=gen).to(device)
        views = random_augment(x[idx], gen if x.device.type == "cpu" else None)
        update(opt, sched, F.cross_entropy(net(views), y[idx], label_smoothing=0.1))
    net.eval()
    names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
    ev = EvaluationClassifier(net, (int(images.shape[2]), int(images.shape[3])), names)
    if len(val_idx):
        ev.val_accuracy = float((ev.logits(images[val_idx]).argmax(1) == labels[val_idx]).float().mean())
    return ev


def attack_metrics(
    evaluator: Judge,
    reconstructions: torch.Tensor,
    classes: torch.Tensor,
    private_images: torch.Tensor,
    private_labels: torch.Tensor,
    private_features: torch.Tensor | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Judge reconstructions: top-1/top-5, KNN feature distance, PSNR/SSIM to the closest private image, each with
    its bootstrap 95 % interval over the reconstructions.

    :param evaluator: the judge: the trained evaluation classifier or the pretrained judge
        (:class:`privacy.attacks.pretrained.PretrainedJudge`); anything with ``logits_and_features``,
        ``features``, ``num_classes`` and ``describe``.
    :param reconstructions: ``(M, C, H, W)`` attack outputs in ``[0, 1]``.
    :param classes: ``(M,)`` the private identity each one is meant to show.
    :param private_images: ``(N, C, H, W)`` the private images (the ground truth).
    :param private_labels: ``(N,)`` their identities.
    :param private_features: ``evaluator.features(private_images)``, if already computed (several attacks are
        judged against the same private images).
    :param seed: the bootstrap's seed.
    :return: ``top1``, ``top5``, ``chance_top1`` (uniform), ``chance_top5``, ``chance_majority`` (always naming the
        most frequent attacked identity), ``top1_over_chance``, ``knn_dist``, ``knn_dist_other``, ``psnr``,
        ``ssim`` (means over reconstructions), ``intervals`` (``[lo, hi]`` of each), ``num_reconstructions``,
        ``attacked_identities`` and ``judge`` (its :meth:`describe`).
    """
    classes = torch.as_tensor(classes).long().cpu()
    private_labels = torch.as_tensor(private_labels).long().cpu()
    if len(reconstructions) != len(classes) or len(reconstructions) == 0:
        raise ValueError(f"need one class per reconstruction (and at least one), got {len(reconstructions)} images "
                         f"and {len(classes)} classes")
    c = evaluator.num_classes
    if int(classes.max()) >= c or int(classes.min()) < 0:
        raise ValueError(f"classes must be private identities 0..{c - 1}, got {int(classes.min())}..{int(classes.max())}")
    missing = sorted(set(classes.tolist()) - set(private_labels.tolist()))
    if missing:
        raise ValueError(f"identities {missing[:5]} have no private image to compare the reconstructions with")
    rec = reconstructions.detach().float().cpu().clamp(0, 1)
    priv = private_images.float().cpu()
    logits, f_rec = evaluator.logits_and_features(rec)
    rank = (logits > logits.gather(1, classes.view(-1, 1))).sum(1)
    f_priv = evaluator.features(priv) if private_features is None else private_features.float().cpu()
    if f_priv.shape != (len(priv), f_rec.shape[1]):
        raise ValueError(f"private_features must be ({len(priv)}, {f_rec.shape[1]}), got {tuple(f_priv.shape)}")
    dist = torch.cdist(f_rec, f_priv)  # (M, N)
    same = classes.view(-1, 1) == private_labels.view(1, -1)
    knn_same = dist.masked_fill(~same, float("inf")).min(1).values
    knn_other = dist.masked_fill(same, float("inf")).min(1).values
    best_psnr = torch.full((len(rec),), float("-inf"))
    best_ssim = torch.full((len(rec),), float("-inf"))
    pairs = same.nonzero()  # (reconstruction, private image of its identity)
    for chunk in pairs.split(2048):
        i, j = chunk[:, 0], chunk[:, 1]
        best_psnr.scatter_reduce_(0, i, psnr(rec[i], priv[j]), "amax")
        best_ssim.scatter_reduce_(0, i, ssim(rec[i], priv[j]), "amax")
    per_item = {"top1": (rank < 1).double(), "top5": (rank < 5).double(), "knn_dist": knn_same.double(),
                "psnr": best_psnr.double(), "ssim": best_ssim.double()}
    intervals = {k: list(bootstrap_interval(v.numpy(), seed=seed)) for k, v in per_item.items()}
    finite_other = torch.isfinite(knn_other)
    top1 = float(per_item["top1"].mean())
    return {
        "top1": top1, "top5": float(per_item["top5"].mean()), "chance_top1": 1.0 / c, "chance_top5": min(1.0, 5.0 / c),
        "chance_majority": chance_levels(classes.numpy(), c)["majority"], "top1_over_chance": top1 * c,
        "knn_dist": float(knn_same.mean()),
        "knn_dist_other": float(knn_other[finite_other].mean()) if finite_other.any() else float("nan"),
        "psnr": float(best_psnr.mean()), "ssim": float(best_ssim.mean()), "intervals": intervals,
        "num_reconstructions": int(len(rec)), "attacked_identities": int(classes.unique().numel()),
        "judge": evaluator.describe(),
    }


def privacy_score(results: dict[str, dict[str, Any]]) -> float:
    """One number for a defended model: ``1 - leakage`` of its most successful attack, in ``[0, 1]``.

    The leakage of an attack is the mean of its chance-corrected top-1 and top-5 evaluator accuracies,
    ``max(0, (top_k - chance_k) / (1 - chance_k))`` for ``k`` in 1 and 5: 0 when the attack does no better than
    guessing, 1 when every reconstruction is recognised as its identity. Privacy is what the *strongest* attack
    leaves (an attacker picks the attack that works), so the score is ``1 - max over attacks of leakage``: 1 =
    nothing recognisable was recovered, 0 = every private identity was. PSNR, SSIM and the KNN distance are
    reported beside it, not folded in: they have no common scale with accuracy and reward blur.

    :param results: attack name -> the dict of :func:`attack_metrics` (or any dict with ``top1``, ``top5``,
        ``chance_top1``, ``chance_top5``).
    """
    if not results:
        raise ValueError("privacy_score needs the metrics of at least one attack")

    def leak(m: dict[str, Any]) -> float:
        parts = [max(0.0, (m[t] - m[f"chance_{t}"]) / (1.0 - m[f"chance_{t}"])) if m[f"chance_{t}"] < 1 else 0.0
                 for t in ("top1", "top5")]
        return sum(parts) / 2

    return 1.0 - max(leak(m) for m in results.values())
