"""Classification heads for face recognition that accept hard or soft (mixed) labels.

A mixed sample carries a soft label, a convex combination of the one-hot labels of the ``k`` identities mixed
into it. Every head here turns it into the weight-averaged loss over those identities: for a soft label ``t``,
``loss = sum_c t_c * CE(margin_logits(c), c)``, where ``margin_logits(c)`` applies the head's margin to class
``c`` only. For a one-hot ``t`` this is the head's usual loss; for the plain softmax head (no margin) it is the
soft-label cross-entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ArcFaceHead", "ClassifierHead", "CosFaceHead", "CosineClassifier", "SoftmaxHead", "make_head", "targets_as_components",
]


def targets_as_components(targets: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split hard or soft labels into (class index, weight) components.

    :param targets: ``(N,)`` integer labels, or ``(N, num_classes)`` soft labels (rows summing to 1; entries may
        be negative, as in negative label smoothing).
    :param num_classes: number of classes.
    :return: ``(classes, weights)``, both ``(N, m)``; ``m`` = the most non-zero entries in a row; padding
        components have weight 0. The loss is then the soft-label cross-entropy ``-sum_j t_j log p_j``.
    """
    n = targets.shape[0]
    if targets.ndim == 1 and not targets.is_floating_point():
        if n and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
            raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(targets.min())}..{int(targets.max())}")
        return targets.long().unsqueeze(1), torch.ones(n, 1, device=targets.device)
    if targets.shape != (n, num_classes) or not targets.is_floating_point():
        raise ValueError(
            f"targets must be integer labels of shape ({n},) or float soft labels of shape ({n}, {num_classes}), "
            f"got {tuple(targets.shape)} {targets.dtype}"
        )
    m = max(int((targets != 0).sum(1).max()), 1) if n else 1
    if m == num_classes:  # e.g. label smoothing: every class has a weight
        return torch.arange(num_classes, device=targets.device).expand(n, -1), targets
    # the largest weights by magnitude: negative ones (negative label smoothing) count as much as positive ones
    classes = targets.abs().topk(m, dim=1).indices
    return classes, targets.gather(1, classes)


class ClassifierHead(nn.Module):
    """Base class: subclasses give :meth:`logits` (no margin) and :meth:`target_logits` (with margin).

    :param embedding_dim: size of the embeddings.
    :param num_classes: number of identities.
    """

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: a classifier head needs at least 2 classes")
        self.embedding_dim = int(embedding_dim)
        self.num_classes = int(num_classes)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits without margin (what evaluation uses), ``(N, num_classes)``."""
        raise NotImplementedError

    def target_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Map the logits of target classes to their margin-penalised values (identity: no margin)."""
        return logits

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample loss.

        :param embeddings: ``(N, embedding_dim)``.
        :param targets: ``(N,)`` integer labels or ``(N, num_classes)`` soft labels.
        :return: ``(N,)`` losses (the weight-averaged margin loss over each sample's identities).
        """
        logits = self.logits(embeddings)
        classes, weights = targets_as_components(targets, self.num_classes)
        m = classes.shape[1]
        target = self.target_logits(logits.gather(1, classes))  # (N, m)
        per_comp = logits.unsqueeze(1).expand(-1, m, -1).scatter(2, classes.unsqueeze(2), target.unsqueeze(2))
        ce = torch.logsumexp(per_comp, dim=2) - target
        return (weights.to(ce.dtype) * ce).sum(1)


class SoftmaxHead(ClassifierHead):
    """A plain linear classifier with softmax cross-entropy (soft-label cross-entropy for mixed labels)."""

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__(embedding_dim, num_classes)
        self.fc = nn.Linear(embedding_dim, num_classes)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.fc(embeddings)


class CosineClassifier(nn.Module):
    """Cosine similarity between each embedding and each of ``num_classes`` learnt class centres.

    The margin heads' parameters live here, in a module whose forward takes the activations only, so that
    per-sample-gradient engines (Opacus) can compute its gradients; the margin is applied outside it.

    :param embedding_dim: size of the embeddings.
    :param num_classes: number of class centres.
    """

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, embedding_dim)`` embeddings to ``(N, num_classes)`` cosines."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))


class ArcFaceHead(ClassifierHead):
    """ArcFace (Deng et al., CVPR 2019): logits ``s * cos(theta)``, the target's ``s * cos(theta + m)``.

    Past ``theta + m > pi`` the target logit becomes ``s * (cos(theta) - m * sin(m))`` so that it keeps
    decreasing in ``theta``; without this guard the loss can fall while embeddings move away from their class.

    :param embedding_dim: size of the embeddings.
    :param num_classes: number of identities.
    :param scale: the scale ``s``.
    :param margin: the additive angular margin ``m`` in radians.
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 32.0, margin: float = 0.5) -> None:
        super().__init__(embedding_dim, num_classes)
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"margin={margin} is out of range: accepted 0 <= margin < pi/2 (radians)")
        self.scale = float(scale)
        self.margin = float(margin)
        self.classifier = CosineClassifier(embedding_dim, num_classes)

    @property
    def weight(self) -> nn.Parameter:
        """The class centres, ``(num_classes, embedding_dim)`` (held by :attr:`classifier`)."""
        return self.classifier.weight

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        # checkpoints written before the centres moved into ``classifier`` name them ``<prefix>weight``
        if prefix + "weight" in state_dict and prefix + "classifier.weight" not in state_dict:
            state_dict[prefix + "classifier.weight"] = state_dict.pop(prefix + "weight")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine between each embedding and each class centre, ``(N, num_classes)``."""
        return self.classifier(embeddings)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(embeddings)

    def target_logits(self, logits: torch.Tensor) -> torch.Tensor:
        cos = (logits / self.scale).clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        sin = torch.sqrt(1.0 - cos * cos)
        phi = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        phi = torch.where(cos > math.cos(math.pi - self.margin), phi, cos - self.margin * math.sin(self.margin))
        return self.scale * phi


class CosFaceHead(ArcFaceHead):
    """CosFace (Wang et al., CVPR 2018): logits ``s * cos(theta)``, the target's ``s * (cos(theta) - m)``.

    :param embedding_dim: size of the embeddings.
    :param num_classes: number of identities.
    :param scale: the scale ``s``.
    :param margin: the additive cosine margin ``m``.
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 32.0, margin: float = 0.35) -> None:
        super().__init__(embedding_dim, num_classes, scale=scale, margin=margin)

    def target_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits - self.scale * self.margin


_HEADS: dict[str, type[ClassifierHead]] = {"arcface": ArcFaceHead, "cosface": CosFaceHead, "softmax": SoftmaxHead}


def make_head(name: str, embedding_dim: int, num_classes: int, **kwargs: float) -> ClassifierHead:
    """Build a head by name.

    :param name: one of ``"arcface"``, ``"cosface"``, ``"softmax"``.
    :param embedding_dim: size of the embeddings.
    :param num_classes: number of identities.
    :param kwargs: head options (e.g. ``scale``, ``margin`` for ArcFace).
    """
    try:
        cls = _HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; known heads: {', '.join(sorted(_HEADS))}") from None
    return cls(embedding_dim, num_classes, **kwargs)
