"""The FR training step and clean evaluation, behind one small object."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fr_models.backbones import make_backbone
from fr_models.heads import ClassifierHead, make_head

__all__ = ["FRConfig", "FRTrainer", "atomic_torch_save", "atomic_write"]


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


@dataclass
class FRConfig:
    """Everything needed to rebuild an FR model (saved inside checkpoints).

    :ivar in_channels: frequency channels after masking.
    :ivar input_size: ``(h, w)`` of the channels.
    :ivar num_classes: number of training identities.
    :ivar embedding_dim: embedding size.
    :ivar backbone: ``"grid"`` or ``"unblock"`` (see :mod:`fr_models.backbones`).
    :ivar widths: backbone widths; ``None`` = the backbone's default.
    :ivar head: ``"softmax"`` or ``"arcface"``.
    :ivar head_kwargs: head options (``scale``, ``margin``).
    :ivar lr: AdamW learning rate.
    :ivar weight_decay: AdamW weight decay.
    """

    in_channels: int
    input_size: tuple[int, int]
    num_classes: int
    embedding_dim: int = 128
    backbone: str = "grid"
    widths: tuple[int, ...] | None = None
    head: str = "softmax"
    head_kwargs: dict[str, float] = field(default_factory=dict)
    lr: float = 1e-3
    weight_decay: float = 5e-4


class FRTrainer:
    """A frequency-domain FR model (backbone + head) with its optimiser.

    :param config: the model configuration.
    :param device: where the model lives.
    :param seed: if given, the weights are initialised from this seed (torch's global RNG is left untouched).
    """

    def __init__(self, config: FRConfig, device: str | torch.device = "cpu", seed: int | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.backbone = make_backbone(
                config.backbone, config.in_channels, config.input_size, config.embedding_dim, config.widths
            ).to(self.device)
            self.head: ClassifierHead = make_head(
                config.head, config.embedding_dim, config.num_classes, **config.head_kwargs
            ).to(self.device)
        params = list(self.backbone.parameters()) + list(self.head.parameters())
        # fused: one kernel for the whole update on a GPU, where the many small parameter tensors make the
        # default's per-tensor launches a quarter of an update (measured by benchmarks/run.py --device cuda)
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                                           fused=self.device.type == "cuda")
        self.updates = 0
        self.skipped_updates = 0
        #: plain values saved with the weights, e.g. how images become this model's input (set by the trainer's
        #: owner: ``examples/train_fr.py`` and the env record ``input``, ``dropped_channels``, ``image_size``)
        self.metadata: dict[str, Any] = {}

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One optimiser update on a batch.

        A non-finite loss skips the update (the weights stay as they were) and is counted in
        :attr:`skipped_updates`.

        :param inputs: ``(N, C, h, w)`` masked frequency channels (mixed or clean).
        :param targets: ``(N,)`` labels or ``(N, num_classes)`` soft labels.
        :return: ``(N,)`` per-sample losses before the update (detached).
        """
        self.backbone.train()
        self.head.train()
        losses = self.head(self.backbone(inputs), targets)
        loss = losses.mean()
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            self.optimizer.step()
            self.updates += 1
        else:
            self.skipped_updates += 1
        return losses.detach()

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
    def predict(self, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Closed-set identification: the class with the largest logit, ``(N,)``."""
        self.backbone.eval()
        self.head.eval()
        out = [self.head.logits(self.backbone(inputs[i : i + batch_size])).argmax(1) for i in range(0, len(inputs), batch_size)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=inputs.device)

    def accuracy(self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
        """Top-1 identification accuracy on clean held-out images of the training identities."""
        if len(inputs) == 0:
            raise ValueError("cannot evaluate accuracy on an empty set")
        return float((self.predict(inputs, batch_size) == labels.to(self.device)).float().mean())

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser state and configuration (plain values: loads with ``weights_only=True``)."""
        cfg = asdict(self.config)
        cfg["input_size"] = list(cfg["input_size"])
        cfg["widths"] = None if cfg["widths"] is None else list(cfg["widths"])
        return {
            "config": cfg,
            "backbone": self.backbone.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "metadata": dict(self.metadata),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights, optimiser state and the update count."""
        self.backbone.load_state_dict(state["backbone"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state.get("updates", 0))
        self.metadata = dict(state.get("metadata", {}))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint atomically (see :func:`atomic_torch_save`)."""
        return atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> FRTrainer:
        """Rebuild a trainer from a checkpoint written by :meth:`save` (``torch.load(weights_only=True)``)."""
        return cls.from_state_dict(torch.load(path, map_location=device, weights_only=True), device)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> FRTrainer:
        """Rebuild a trainer from :meth:`state_dict`'s output."""
        cfg = dict(state["config"])
        cfg["input_size"] = tuple(cfg["input_size"])
        cfg["widths"] = None if cfg["widths"] is None else tuple(cfg["widths"])
        trainer = cls(FRConfig(**cfg), device=device)
        trainer.load_state_dict(state)
        return trainer
