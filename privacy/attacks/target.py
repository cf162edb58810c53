"""The attacked model and the two threat models.

* **White-box** (:class:`TargetModel`): the attacker holds the FR model's weights *and* the input transform in
  front of it (for a defended model, the block DCT and the channel mask), and backpropagates from the model's
  scores through both to the image. Everything in :mod:`privacy.attacks.whitebox` assumes this.
* **Black-box** (:class:`BlackBoxOracle`): the attacker only submits images to the deployed model and reads what
  it returns, either class scores (softmax probabilities) or embeddings; no weights, no gradients. Everything in
  :mod:`privacy.attacks.blackbox` assumes this, and goes through the oracle, which counts queries.

In both, the attacker's own data are *public* faces of identities the model was not trained on; the private
images are never given to an attack (only to the evaluator that judges it).
"""

from __future__ import annotations

import os
import torch
from torch import nn

from fr_models.card import ModelCard
from fr_models.heads import ClassifierHead
from fr_models.trainer import FRTrainer, load_checkpoint
from mixup_env.transform import input_transform
from privacy.attacks._loop import freeze

__all__ = ["BLACK_BOX", "OUTPUTS", "THREAT_MODELS", "WHITE_BOX", "BlackBoxOracle", "TargetModel", "load_target"]

WHITE_BOX = "white-box"
BLACK_BOX = "black-box"
#: What each threat model gives the attacker.
THREAT_MODELS: dict[str, str] = {
    WHITE_BOX: "the FR model's weights and its input transform (DCT and mask); gradients through both",
    BLACK_BOX: "queries only: images in, the model's outputs (class probabilities or embeddings) out",
}
#: What a black-box oracle may return.
OUTPUTS = ("probabilities", "embedding")


class TargetModel(nn.Module):
    """An FR model as a function of the *image*: ``transform -> backbone -> head``, frozen, always in eval mode.

    :param backbone: the FR backbone (reads the transform's output).
    :param head: the classifier head (its :meth:`~fr_models.heads.ClassifierHead.logits` are the class scores).
    :param transform: image -> model input, differentiable (``None``: the model reads pixels).
    :param image_size: ``(H, W)`` of the images the model reads.
    :param card: what the checkpoint records about the model (input kind, defence, ``k``, identities).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: ClassifierHead,
        transform: nn.Module | None,
        image_size: tuple[int, int],
        card: ModelCard | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.transform = transform if transform is not None else nn.Identity()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.card = card if card is not None else ModelCard(image_size=self.image_size)
        self.class_names = list(self.card.class_names)
        freeze(self)

    def train(self, mode: bool = True) -> TargetModel:
        """Stays in eval mode: an attack must not move the batch-norm statistics of the model it attacks."""
        return super().train(False)

    @property
    def num_classes(self) -> int:
        return int(self.head.num_classes)

    @property
    def in_channels(self) -> int:
        """Colour planes of the images."""
        mask = getattr(self.transform, "mask", None)
        return int(mask.planes) if mask is not None else int(getattr(self.backbone, "in_channels", 1))

    def _check(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"the target reads images (N, C, {self.image_size[0]}, {self.image_size[1]}), "
                             f"got {tuple(images.shape)}")

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` embeddings of ``(N, C, H, W)`` images in ``[0, 1]`` (differentiable in the images)."""
        self._check(images)
        return self.backbone(self.transform(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` class scores (logits) of images in ``[0, 1]`` (differentiable in the images)."""
        return self.head.logits(self.embed(images))


def load_target(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> TargetModel:
    """Load an FR checkpoint (``FRTrainer.save``: from the env or :func:`privacy.defences.train_fr_model`) as a
    :class:`TargetModel`, with the input transform its model card describes in front.

    :param path: the checkpoint.
    :param device: where to put it.
    :raises FileNotFoundError: no such file.
    :raises ValueError: the file is not an FR model checkpoint, or its card records no image size.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"no FR model file at {p!r}")
    state = load_checkpoint(p, "FR model checkpoint (a file written by FRTrainer.save; examples/train_fr.py "
                               "writes fr_model.pt)", device=device)
    if not {"config", "backbone", "head"} <= set(state):
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{p!r} is not an FR model checkpoint: it holds {keys}; expected the keys 'config', "
                         "'backbone', 'head' written by FRTrainer.save")
    trainer = FRTrainer.from_state_dict(state, device)
    card = trainer.card
    if card.image_size is None:
        raise ValueError(f"{p!r} records no image size in its model card: re-save it with card.image_size set "
                         "(the env and privacy.defences.train_fr_model record it)")
    return TargetModel(trainer.backbone, trainer.head, input_transform(card).to(device), card.image_size, card)


class BlackBoxOracle:
    """Query access to a deployed model: images in, outputs out, nothing else (no gradients, no weights).

    :param target: the deployed model.
    :param output: ``"probabilities"`` (softmax of the class scores) or ``"embedding"``.
    :param batch_size: images per forward pass.
    """

    def __init__(self, target: TargetModel, output: str = "probabilities", batch_size: int = 256) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"unknown oracle output {output!r}: accepted {', '.join(OUTPUTS)}")
        self._target = target
        self.output = output
        self.batch_size = int(batch_size)
        #: images submitted so far
        self.queries = 0
        self.image_size = target.image_size
        self.in_channels = target.in_channels
        self.num_classes = target.num_classes

    @property
    def output_dim(self) -> int:
        """Length of one output vector."""
        if self.output == "probabilities":
            return self.num_classes
        return int(self._target.backbone.embedding_dim)  # type: ignore[arg-type]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, output_dim)`` outputs of ``(N, C, H, W)`` images in ``[0, 1]``, detached."""
        dev = next(self._target.parameters()).device
        out = []
        for i in range(0, len(images), self.batch_size):
            x = images[i : i + self.batch_size].to(dev)
            out.append(torch.softmax(self._target(x), 1) if self.output == "probabilities" else self._target.embed(x))
        self.queries += len(images)
        return torch.cat(out).detach()
