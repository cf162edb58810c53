"""The model card: what a saved FR model records about how it was trained and how images become its input.

One typed record, written by whoever trains a model (the env, :func:`privacy.defences.train_fr_model`) and read by
whoever attacks or evaluates it (:func:`privacy.attacks.load_target`); it travels inside the checkpoint as plain
values (so the checkpoint loads with ``weights_only=True``).

>>> card = ModelCard(input="masked_dct", image_size=(32, 32), dropped_channels=(0, 1), defence="fixed", k=3)
>>> ModelCard.from_dict(card.as_dict()) == card
True
>>> ModelCard.from_dict({"input": "jpeg"})
Traceback (most recent call last):
...
ValueError: model card: input 'jpeg' is not one of 'pixel', 'masked_dct'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["INPUT_KINDS", "ModelCard"]

#: How images reach a model: raw pixels, or the masked block DCT of ``mixup_env.transform.FrequencyMasking``.
INPUT_KINDS = ("pixel", "masked_dct")


@dataclass(frozen=True)
class ModelCard:
    """How a model reads images, and the defence it was trained under.

    :param input: ``"pixel"`` or ``"masked_dct"`` (see :data:`INPUT_KINDS`).
    :param image_size: ``(H, W)`` the faces were resized to (``None``: unknown; an attack needs it).
    :param dropped_channels: the frequency channels the mask removes (``masked_dct`` only).
    :param planes: colour planes of the faces.
    :param upsample: the upsampling factor before the block DCT.
    :param colour: the colour space of the transform (``None``: grey for one plane, else RGB).
    :param class_names: the training identities, in label order.
    :param defence: the defence's name (``mask``, ``fixed``, ``policy``, ...; ``None``: not recorded).
    :param k: images per mix of a fixed-k defence.
    :param k_values: the k set of a random or policy defence.
    :param k_distribution: how often a policy chose each k (``{"2": 0.4, ...}``), as it ran.
    :param dirichlet_alpha: the concentration of the mixing weights (a data-level attacker simulates it).
    :param max_weight: the cap on every mixing weight (``None``: uncapped).
    """

    input: str = "pixel"
    image_size: tuple[int, int] | None = None
    dropped_channels: tuple[int, ...] = ()
    planes: int = 1
    upsample: int = 1
    colour: str | None = None
    class_names: tuple[str, ...] = ()
    defence: str | None = None
    k: int | None = None
    k_values: tuple[int, ...] = ()
    k_distribution: Mapping[str, float] = field(default_factory=dict)
    dirichlet_alpha: float = 1.0
    max_weight: float | None = None

    def __post_init__(self) -> None:
        if self.input not in INPUT_KINDS:
            raise ValueError(f"model card: input {self.input!r} is not one of {', '.join(map(repr, INPUT_KINDS))}")
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        for name in ("dropped_channels", "k_values"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "k_distribution", {str(k): float(v) for k, v in self.k_distribution.items()})

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples) to save inside a checkpoint."""
        out = dataclasses.asdict(self)
        for name, value in out.items():
            if isinstance(value, tuple):
                out[name] = list(value)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelCard:
        """The card a checkpoint records (unknown keys refused, missing ones at their defaults).

        :raises ValueError: an unknown key or a bad value, named.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"model card: unknown field(s) {unknown}; accepted: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in values.items() if v is not None})  # None: the field's default
