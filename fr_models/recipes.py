"""Named FR model recipes: backbone, head, input and training settings that go together, in one place.

``examples/train_fr.py``, the env and ``benchmarks/bench_fr.py`` take their defaults from here, so a default
changes in one place. :func:`default_recipe` picks ``"real"`` for real faces and ``"small"`` for the built-in
synthetic stand-in (whose 20 identities a large model would only slow down); ``"tiny"`` is for tests.

Every figure behind these settings is in ``docs/benchmarks.md`` (``python3 benchmarks/bench_fr.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fr_models.trainer import FRConfig

__all__ = ["RECIPES", "FRRecipe", "default_recipe", "get_recipe"]


@dataclass(frozen=True)
class FRRecipe:
    """Settings of an FR model and its training that are chosen together.

    :ivar backbone: a backbone name (:data:`fr_models.backbones.BACKBONES`).
    :ivar widths: stage widths (``None``: the backbone's default).
    :ivar blocks: residual blocks per stage (``"resnet"`` only).
    :ivar embedding_dim: embedding size.
    :ivar head: ``"cosface"``, ``"arcface"`` or ``"softmax"``.
    :ivar head_kwargs: head options (``scale``, ``margin``).
    :ivar upsample: the factor faces are upsampled by before the block DCT (frequency models).
    :ivar image_size: the face size (``None``: keep the data's size).
    :ivar lr: AdamW peak learning rate.
    :ivar weight_decay: AdamW weight decay (weights only, see :class:`fr_models.FRConfig`).
    :ivar lr_schedule: ``"cosine"`` (warm-up, then cosine decay) or ``"constant"``.
    :ivar warmup: warm-up fraction of the cosine schedule.
    :ivar batch_size: faces per update.
    :ivar epochs: passes over the training faces (``examples/train_fr.py``'s default).
    :ivar hflip: mirror faces at random during training.
    :ivar max_shift: shift faces at random by up to this many map positions (whole 8x8 blocks of the upsampled
        face; pixels for pixel models).
    :ivar dropout: the embedding layer's dropout (``"resnet"`` only).
    """

    backbone: str = "resnet"
    widths: tuple[int, ...] | None = (32, 64, 128, 256)
    blocks: tuple[int, ...] | None = None
    embedding_dim: int = 256
    head: str = "cosface"
    head_kwargs: dict[str, float] = field(default_factory=dict)
    upsample: int = 4
    image_size: int | None = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    lr_schedule: str = "cosine"
    warmup: float = 0.05
    batch_size: int = 64
    epochs: int = 40
    hflip: bool = True
    max_shift: int = 1
    dropout: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), for JSON."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def fr_config(self, input_shape: Sequence[int], num_classes: int, stem: str = "frequency",
                  norm: str = "batch") -> FRConfig:
        """The :class:`fr_models.FRConfig` of this recipe for inputs of ``input_shape`` (``(C, h, w)``).

        :param input_shape: the model input's ``(channels, height, width)``: image planes and size for the pixel
            stem, kept frequency channels and map size for the frequency stem.
        :param num_classes: the training identities.
        :param stem: ``"pixel"`` or ``"frequency"`` (``"resnet"`` only; the other backbones ignore it).
        :param norm: ``"batch"``, or ``"group"`` for DP-SGD.
        """
        resnet = self.backbone == "resnet"
        return FRConfig(in_channels=int(input_shape[0]), input_size=(int(input_shape[1]), int(input_shape[2])),
                        num_classes=int(num_classes), embedding_dim=int(self.embedding_dim), backbone=self.backbone,
                        widths=self.widths, blocks=self.blocks if resnet else None, stem=stem,
                        upsample=int(self.upsample), head=self.head, head_kwargs=dict(self.head_kwargs),
                        lr=float(self.lr), weight_decay=float(self.weight_decay), lr_schedule=self.lr_schedule,
                        warmup=float(self.warmup), norm=norm, dropout=float(self.dropout) if resnet else 0.0)

    def replace(self, **changes: Any) -> FRRecipe:
        """A copy with some settings changed (``None`` values are ignored, so command-line defaults pass through).
        A backbone other than ``"resnet"`` without an explicit ``upsample`` gets ``upsample=1``: the older backbones
        were designed for maps without upsampling."""
        given = {k: v for k, v in changes.items() if v is not None}
        out = replace(self, **given)
        if out.backbone != "resnet" and "upsample" not in given:
            out = replace(out, upsample=1)
        return out


#: The named recipes.
RECIPES: dict[str, FRRecipe] = {
    # real faces: a ResNet body, CosFace, warm-up + cosine schedule, mirroring and shifts of one block (2 pixels of a
    # 64x64 face): on LFW (seed 0, 40 epochs, flip test) the shifts took the masked model from 0.883 to 0.940 top-1
    # (examples/train_fr.py --data lfw --public-fraction 0.367 --split-seed 0 --defence mask --max-shift 0, then 1)
    # (docs/benchmarks.md)
    "real": FRRecipe(),
    # the built-in synthetic faces (20 identities x 40 images, 64x64): small and fast enough for an env step;
    # softmax: on these faces CosFace reached 0.47 clean accuracy at k = 6 after 200 env steps, softmax 0.91
    "small": FRRecipe(widths=(16, 16, 32, 64), embedding_dim=64, head="softmax", upsample=2, image_size=None,
                      lr=1e-2, weight_decay=5e-4, epochs=20, max_shift=0),
    # the defaults before issue 14 (the grid backbone on 8x8 maps, softmax, constant lr): what the committed defence
    # grid (docs/RESULTS.md) was computed with; examples/reproduce.py keeps it until that grid is rerun
    "legacy": FRRecipe(backbone="grid", widths=None, embedding_dim=128, head="softmax", upsample=1, image_size=None,
                       lr=1e-3, weight_decay=5e-4, lr_schedule="constant", epochs=10, hflip=False, max_shift=0),
    # the test suite's: trains in seconds
    "tiny": FRRecipe(widths=(8, 8, 8, 16), embedding_dim=32, head="softmax", upsample=1, image_size=None, lr=1e-2,
                     weight_decay=5e-4, epochs=3, hflip=False, max_shift=0),
}


def get_recipe(name: str) -> FRRecipe:
    """The recipe called ``name``.

    :raises ValueError: an unknown name (the known ones are listed).
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown FR recipe {name!r}; known recipes: {', '.join(RECIPES)}") from None


def default_recipe(source: str) -> str:
    """``"small"`` for the built-in synthetic faces (``source`` as in :attr:`fr_models.FaceData.source`), ``"real"``
    for everything else."""
    return "small" if str(source).startswith("synthetic") else "real"
