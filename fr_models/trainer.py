"""The FR training step and clean evaluation, behind one small object."""

from __future__ import annotations

import math
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fr_models.backbones import make_backbone
from fr_models.card import ModelCard
from fr_models.evaluation import identification_accuracy
from fr_models.heads import ClassifierHead, make_head

__all__ = ["LR_SCHEDULES", "CheckpointError", "FRConfig", "FRTrainer", "atomic_torch_save", "atomic_write",
           "load_checkpoint", "lr_factor"]

#: Learning-rate schedules of :class:`FRConfig`.
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


def lr_factor(schedule: str, update: int, total: int | None, warmup: float) -> float:
    """The learning rate of update ``update`` (0-based) as a fraction of the peak.

    ``"constant"``: 1. ``"cosine"``: ``(update + 1) / w`` over the first ``w = max(1, warmup * total)`` updates,
    then ``(1 + cos(pi * t)) / 2`` with ``t`` going from 0 to 1 at ``total``; 0 past ``total``. With ``total``
    unknown (``None`` or 0) the factor is 1.
    """
    if schedule == "constant" or not total:
        return 1.0
    w = max(1, int(warmup * total))
    if update < w:
        return (update + 1) / w
    t = min(1.0, (update - w) / max(1, total - w))
    return 0.5 * (1.0 + math.cos(math.pi * t))


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Draw from torch's global generator seeded with ``seed`` inside the block (a module's initialisation), and
    leave the caller's generator as it was (``None``: the caller's own draws, still forked).

    >>> with seeded(0):
    ...     a = torch.rand(2)
    >>> with seeded(0):
    ...     b = torch.rand(2)
    >>> torch.equal(a, b)
    True
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Write a file atomically: ``write(tmp)`` fills a temporary file in the same folder (with the same suffix,
    for writers that insist on one), which is then renamed over ``path``; a crash never leaves half a file.

    :param path: destination; parent folders are created.
    :param write: called with the temporary path; must write the whole file there.
    :return: the path written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=f".tmp{p.suffix}", dir=p.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` through :func:`atomic_write`.

    :param obj: what to save (keep it to tensors and plain Python values so ``weights_only=True`` loads it).
    :param path: destination; parent folders are created.
    :return: the path written.
    """
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of the expected kind (truncated, foreign, or unsafe to load)."""


def load_checkpoint(path: str | os.PathLike[str], what: str, keys: tuple[str, ...] = (),
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`atomic_torch_save`, safely: ``torch.load(weights_only=True)``, which
    refuses any pickled object other than tensors and plain values, so a crafted file cannot run code.

    :param path: the file.
    :param what: how to name the expected file in errors (e.g. ``"FR checkpoint"``).
    :param keys: keys the checkpoint's dict must hold.
    :param device: where to map the tensors.
    :raises FileNotFoundError: no such file.
    :raises CheckpointError: the file is truncated, corrupted, not a torch checkpoint, holds objects that are
        refused, or lacks ``keys``; the message names the path and what was expected.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"no {what} at {p!r}")
    try:
        state = torch.load(p, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, EOF and format errors all mean the same to the user
        if isinstance(e, pickle.UnpicklingError) and ("weights_only" in str(e) or "Weights only" in str(e)):
            raise CheckpointError(
                f"{p!r} is not a readable {what}: it holds Python objects other than tensors and plain values, and "
                "loading those could run code, so it is refused (expected a file this library saved)") from e
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{p!r} is not a readable {what}: the file is truncated, corrupted or not a torch "
                              f"checkpoint ({type(e).__name__}: {first})") from e
    if not isinstance(state, dict) or not set(keys) <= set(state):
        held = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{p!r} is not a {what}: it holds {held}; expected the keys {sorted(keys)}")
    return state


def _total_norm(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The L2 norm of all ``tensors`` together (non-finite if any entry is), without a device sync."""
    if not tensors:
        return torch.zeros((), device=device)
    get = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6: one fused reduction
    if get is not None:
        return get(tensors)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


@dataclass
class FRConfig:
    """Everything needed to rebuild an FR model (saved inside checkpoints).

    :ivar in_channels: frequency channels after masking.
    :ivar input_size: ``(h, w)`` of the channels.
    :ivar num_classes: number of training identities.
    :ivar embedding_dim: embedding size.
    :ivar backbone: one of :data:`fr_models.backbones.BACKBONES` (``"resnet"``, ``"grid"``, ``"unblock"``,
        ``"pixel"``).
    :ivar widths: backbone widths; ``None`` = the backbone's default.
    :ivar norm: ``"batch"`` or ``"group"`` normalisation (group: per-sample, for DP-SGD).
    :ivar head: ``"softmax"``, ``"arcface"`` or ``"cosface"``.
    :ivar head_kwargs: head options (``scale``, ``margin``).
    :ivar lr: AdamW peak learning rate.
    :ivar weight_decay: AdamW weight decay (decoupled), applied to convolution and linear weights only: never to
        biases or normalisation parameters.
    :ivar blocks: residual blocks per stage (``"resnet"`` only; ``None`` = one per stage).
    :ivar stem: ``"pixel"`` or ``"frequency"`` (``"resnet"`` only).
    :ivar upsample: the factor faces were upsampled by before the DCT (``"resnet"`` frequency stem only).
    :ivar lr_schedule: ``"constant"``, or ``"cosine"``: a linear warm-up over the first ``warmup`` fraction of the
        updates, then a cosine decay to 0 at :attr:`FRTrainer.total_updates`.
    :ivar warmup: the warm-up fraction of ``"cosine"``, in ``[0, 1)``.
    :ivar dropout: the embedding layer's dropout (``"resnet"`` only).
    """

    in_channels: int
    input_size: tuple[int, int]
    num_classes: int
    embedding_dim: int = 128
    backbone: str = "grid"
    widths: tuple[int, ...] | None = None
    norm: str = "batch"
    head: str = "softmax"
    head_kwargs: dict[str, float] = field(default_factory=dict)
    lr: float = 1e-3
    weight_decay: float = 5e-4
    blocks: tuple[int, ...] | None = None
    stem: str = "frequency"
    upsample: int = 1
    lr_schedule: str = "constant"
    warmup: float = 0.05
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "embedding_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: accepted a positive integer")
        if len(self.input_size) != 2 or min(int(v) for v in self.input_size) < 1:
            raise ValueError(f"input_size={self.input_size!r} is invalid: accepted (height, width), both positive")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} is invalid: accepted a positive finite number")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"weight_decay={self.weight_decay!r} is invalid: accepted a finite number >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; accepted: {', '.join(LR_SCHEDULES)}")
        if not 0.0 <= float(self.warmup) < 1.0:
            raise ValueError(f"warmup={self.warmup!r} is invalid: accepted a fraction 0 <= warmup < 1")


class FRTrainer:
    """A frequency-domain FR model (backbone + head) with its optimiser.

    :param config: the model configuration.
    :param device: where the model lives.
    :param seed: if given, the weights are initialised from this seed (torch's global RNG is left untouched).
    """

    def __init__(self, config: FRConfig, device: str | torch.device = "cpu", seed: int | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        with seeded(seed):
            self.backbone = make_backbone(
                config.backbone, config.in_channels, config.input_size, config.embedding_dim, config.widths,
                config.norm, config.blocks, config.stem, config.upsample, config.dropout,
            ).to(self.device)
            self.head: ClassifierHead = make_head(
                config.head, config.embedding_dim, config.num_classes, **config.head_kwargs
            ).to(self.device)
        params = list(self.backbone.parameters()) + list(self.head.parameters())
        self._params = params
        # weight decay on convolution, linear and head weights only; biases and normalisation parameters are
        # never decayed (decaying batch-norm scales fights the normalisation)
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        #: the number of updates the learning-rate schedule spans (set by whoever knows it: ``fit``, the env);
        #: ``None``: no decay
        self.total_updates: int | None = None
        #: why the last :meth:`train_step` skipped its update (``None``: it did not)
        self.last_fault: str | None = None
        # fused: one kernel for the whole update on a GPU, where the many small parameter tensors make the
        # default's per-tensor launches a quarter of an update (measured by benchmarks/run.py --device cuda)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=self.device.type == "cuda")
        self.updates = 0
        self.skipped_updates = 0
        #: how images become this model's input and the defence it was trained under, saved with the weights
        #: (set by the trainer's owner: the env, ``privacy.defences.train_fr_model``)
        self.card = ModelCard()

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One optimiser update on a batch.

        A non-finite loss or gradient skips the update: the weights, the optimiser state and the batch-norm
        statistics (which the forward pass already moved) stay exactly as they were. The skip is counted in
        :attr:`skipped_updates` and named in :attr:`last_fault`.

        :param inputs: ``(N, C, h, w)`` masked frequency channels (mixed or clean).
        :param targets: ``(N,)`` labels or ``(N, num_classes)`` soft labels.
        :return: ``(N,)`` per-sample losses before the update (detached).
        """
        self.backbone.train()
        self.head.train()
        buffers = [b for m in (self.backbone, self.head) for b in m.buffers()]
        saved = [b.clone() for b in buffers]  # batch-norm statistics: small, and a NaN batch would poison them
        lr = self.config.lr * lr_factor(self.config.lr_schedule, self.updates, self.total_updates, self.config.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses = self.head(self.backbone(inputs), targets)
        loss = losses.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = _total_norm([p.grad for p in self._params if p.grad is not None], loss.device)
        loss_value, norm_value = torch.stack([loss.detach(), norm.to(loss.dtype)]).tolist()  # one device sync
        self.last_fault = None
        if not math.isfinite(loss_value):
            self.last_fault = "non-finite FR loss"
        elif not math.isfinite(norm_value):
            self.last_fault = "non-finite FR gradients"
        else:
            self.optimizer.step()
            self.updates += 1
        if self.last_fault is not None:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)
            self.skipped_updates += 1
        return losses.detach()

    @torch.no_grad()
    def recalibrate_norms(self, inputs: torch.Tensor, batch_size: int = 256) -> None:
        """Re-estimate the batch-norm statistics on clean inputs, at the current weights.

        Batch norm keeps running statistics of what it was trained on; after training on mixed batches those are
        the statistics of mixes (a mix of k faces has less variance than a face), and an evaluation on clean faces
        is then normalised wrongly. This replaces them by the exact average over ``inputs`` (batch statistics,
        as in training), leaving every weight as it is. Models without batch norm are left untouched.

        :param inputs: ``(N, C, h, w)`` clean model inputs (e.g. a fixed subset of the training faces).
        :param batch_size: faces per forward pass (a last batch of one face is skipped: batch norm needs two).
        """
        norms = [m for m in self.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms or len(inputs) < 2:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        self.backbone.train()
        try:
            for i in range(0, len(inputs), batch_size):
                batch = inputs[i : i + batch_size]
                if len(batch) > 1:
                    self.backbone(batch.float())
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            self.backbone.eval()

    def weights_finite(self) -> bool:
        """Whether every weight and buffer of the model is finite (one device sync; the largest magnitude of
        each tensor is checked, so large finite values cannot overflow into a false alarm)."""
        tensors = [t.detach() for m in (self.backbone, self.head) for t in [*m.parameters(), *m.buffers()]
                   if t.is_floating_point()]
        return bool(torch.isfinite(torch.stack([t.abs().amax() for t in tensors if t.numel()])).all())

    @torch.no_grad()
    def losses(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample losses of the current model (evaluation mode, no update), ``(N,)``."""
        self.backbone.eval()
        self.head.eval()
        return self.head(self.backbone(inputs), targets)

    @torch.no_grad()
    def sample_stats(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample statistics of the current model on clean labelled inputs (evaluation mode, one forward).

        :param inputs: ``(N, C, h, w)`` masked frequency channels.
        :param labels: ``(N,)`` integer labels.
        :return: ``loss`` (the head's loss), ``confidence`` (softmax probability of the true class, margin-free
            logits) and ``margin`` (that probability minus the largest other class's), each ``(N,)``.
        """
        self.backbone.eval()
        self.head.eval()
        emb = self.backbone(inputs)
        loss = self.head(emb, labels)
        prob = torch.softmax(self.head.logits(emb), dim=1)
        true = prob.gather(1, labels.long().unsqueeze(1)).squeeze(1)
        other = prob.scatter(1, labels.long().unsqueeze(1), -1.0).max(1).values
        return {"loss": loss, "confidence": true, "margin": true - other}

    @torch.no_grad()
    def logits(self, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Class scores ``(N, num_classes)`` of clean inputs (eval mode)."""
        self.backbone.eval()
        self.head.eval()
        out = [self.head.logits(self.backbone(inputs[i : i + batch_size])) for i in range(0, len(inputs), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.config.num_classes, device=inputs.device)

    def predict(self, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Closed-set identification: the class with the largest logit, ``(N,)``."""
        return self.logits(inputs, batch_size).argmax(1)

    def accuracy(self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
        """Top-1 identification accuracy on clean held-out images of the training identities
        (:func:`fr_models.evaluation.identification_accuracy`)."""
        if len(inputs) == 0:
            raise ValueError("cannot evaluate accuracy on an empty set")
        return identification_accuracy(self.logits(inputs, batch_size).cpu(), labels.cpu(), (1,))["top1"]

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser state and configuration (plain values: loads with ``weights_only=True``)."""
        cfg = asdict(self.config)
        cfg["input_size"] = list(cfg["input_size"])
        cfg["widths"] = None if cfg["widths"] is None else list(cfg["widths"])
        cfg["blocks"] = None if cfg["blocks"] is None else list(cfg["blocks"])
        return {
            "config": cfg,
            "backbone": self.backbone.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "skipped_updates": self.skipped_updates,
            "total_updates": -1 if self.total_updates is None else int(self.total_updates),
            "card": self.card.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights, optimiser state and the update count."""
        self.backbone.load_state_dict(state["backbone"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state.get("updates", 0))
        self.skipped_updates = int(state.get("skipped_updates", 0))
        total = int(state.get("total_updates", -1))
        self.total_updates = None if total < 0 else total
        # checkpoints before the model card held the same fields as a free-form "metadata" dict
        self.card = ModelCard.from_dict(state.get("card", state.get("metadata", {})))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint atomically (see :func:`atomic_torch_save`)."""
        return atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> FRTrainer:
        """Rebuild a trainer from a checkpoint written by :meth:`save` (safely: see :func:`load_checkpoint`)."""
        state = load_checkpoint(path, "FR checkpoint", ("config", "backbone", "head", "optimizer"), device)
        return cls.from_state_dict(state, device)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> FRTrainer:
        """Rebuild a trainer from :meth:`state_dict`'s output."""
        cfg = dict(state["config"])
        cfg["input_size"] = tuple(cfg["input_size"])
        cfg["widths"] = None if cfg["widths"] is None else tuple(cfg["widths"])
        if cfg.get("blocks") is not None:
            cfg["blocks"] = tuple(cfg["blocks"])
        trainer = cls(FRConfig(**cfg), device=device)
        trainer.load_state_dict(state)
        return trainer
