"""Black-box model inversion (Yang et al., CCS 2019): learn to invert the model's outputs from public faces.

Threat model: :data:`~privacy.attacks.target.BLACK_BOX`. The attacker submits public faces (and random views of
them) to the :class:`~privacy.attacks.target.BlackBoxOracle`, and trains a decoder from each returned output
vector back to the face that produced it. It then decodes, for each private identity,

* its **class vector** (``"probabilities"`` outputs): the one-hot score vector of the identity, i.e. the output a
  face the model is certain of would give; or
* its **mean output** (either output): the mean of outputs the model gave on that identity's private faces, e.g.
  embeddings leaked from an enrolment database. The faces themselves never reach the attacker; only outputs do.

Score vectors are truncated to their largest entries (the rest set to zero) before decoding, as Yang et al. do to
align the public outputs with the confident vectors decoded later. In training each vector keeps a random number
``1..top_m`` of its entries, so a vector with a single entry (a class vector) is one the decoder has seen; the
class vector of identity ``c`` carries the median top-1 score of the public outputs at ``c`` (a one-hot vector of
1 would lie outside everything the decoder was trained on when the model is unsure of public faces).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from fr_models.trainer import seeded
from privacy.attacks._loop import Schedule, freeze, update
from privacy.attacks.augment import random_augment
from privacy.attacks.priors import ConvDecoder
from privacy.attacks.target import BlackBoxOracle
from privacy.attacks.whitebox import InversionResult

__all__ = ["OutputDecoder", "invert_class_vectors", "invert_mean_outputs", "train_output_decoder"]


class OutputDecoder(torch.nn.Module):
    """Model output -> face, with the output's preprocessing (truncation of scores, scaling of embeddings).

    :param output: the oracle's output kind (``"probabilities"`` or ``"embedding"``).
    :param output_dim: its length.
    :param channels: colour planes of the faces.
    :param image_size: ``(H, W)`` of the faces.
    :param top_m: score entries kept (probabilities only).
    """

    typical_top1: torch.Tensor

    def __init__(self, output: str, output_dim: int, channels: int, image_size: tuple[int, int], top_m: int = 5) -> None:
        super().__init__()
        self.output, self.top_m = output, max(1, min(int(top_m), int(output_dim)))
        self.decoder = ConvDecoder(output_dim, channels, image_size)
        #: median top-1 score of the public outputs (the height of a decoded class vector)
        self.register_buffer("typical_top1", torch.tensor(1.0))

    def prepare(self, outputs: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Truncate score vectors to their ``keep`` (default ``top_m``) largest entries, per row; scale unit
        embeddings to unit variance per entry."""
        if self.output != "probabilities":
            return F.normalize(outputs, dim=1) * outputs.shape[1] ** 0.5
        values, indices = outputs.topk(self.top_m, dim=1)
        if keep is not None:
            values = values * (torch.arange(self.top_m, device=outputs.device).view(1, -1) < keep.view(-1, 1))
        return torch.zeros_like(outputs).scatter(1, indices, values) * 10.0

    def forward(self, outputs: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.prepare(outputs, keep))


def train_output_decoder(
    oracle: BlackBoxOracle,
    public_images: torch.Tensor,
    views_per_image: int = 4,
    top_m: int = 5,
    schedule: Schedule = Schedule(20),
) -> OutputDecoder:
    """Query the oracle on public faces and random views of them, and fit a decoder from outputs to faces.

    :param oracle: the black-box model (``views_per_image * N`` queries).
    :param public_images: ``(N, C, H, W)`` public faces in ``[0, 1]``.
    :param views_per_image: views of each public face submitted (the first is the face itself).
    :param top_m: most score entries kept (see :class:`OutputDecoder`).
    :param schedule: epochs, batch size, learning rate, seed, device, progress and fewest updates
        (:class:`~privacy.attacks._loop.Schedule`; at least ``min_updates`` updates).
    """
    if public_images.ndim != 4 or len(public_images) < 2:
        raise ValueError(f"need at least 2 public faces (N, C, H, W), got {tuple(public_images.shape)}")
    if tuple(public_images.shape[-2:]) != oracle.image_size:
        raise ValueError(f"public faces are {tuple(public_images.shape[-2:])}, the model reads {oracle.image_size}")
    gen = torch.Generator().manual_seed(schedule.seed)
    views = [public_images] + [random_augment(public_images, gen) for _ in range(max(0, views_per_image - 1))]
    x = torch.cat(views)
    y = oracle(x).cpu()
    with seeded(schedule.seed):
        model = OutputDecoder(oracle.output, y.shape[1], x.shape[1], oracle.image_size, top_m).to(schedule.device)
    if oracle.output == "probabilities":
        model.typical_top1.fill_(float(y.max(1).values.median()))
    device = schedule.device
    x, y = x.to(device), y.to(device)
    opt, sched = schedule.adam(model.parameters(), len(x))
    model.train()
    for idx in schedule.batches(len(x), gen, "black-box decoder"):
        idx = idx.to(device)
        keep = torch.randint(1, model.top_m + 1, (len(idx),), generator=gen).to(device)
        update(opt, sched, F.mse_loss(model(y[idx], keep), x[idx]))
    return freeze(model)  # type: ignore[return-value]


@torch.no_grad()
def invert_class_vectors(decoder: OutputDecoder, classes: torch.Tensor | list[int], num_classes: int) -> InversionResult:
    """Decode the class vector of each identity: its score alone, at the public outputs' median top-1 height
    (``"probabilities"`` decoders only)."""
    if decoder.output != "probabilities":
        raise ValueError("class vectors are score vectors: this decoder inverts embeddings (use invert_mean_outputs)")
    t0 = time.perf_counter()
    cls = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    dev = next(decoder.parameters()).device
    images = decoder(F.one_hot(cls, num_classes).float().to(dev) * decoder.typical_top1).cpu()
    return InversionResult(images, cls, torch.full((len(cls),), float("nan")), time.perf_counter() - t0,
                           {"decoded": "class vector", "output": decoder.output})


@torch.no_grad()
def invert_mean_outputs(decoder: OutputDecoder, outputs: torch.Tensor, labels: torch.Tensor) -> InversionResult:
    """Decode, per identity, the mean of the outputs leaked for its private faces.

    :param decoder: a trained :class:`OutputDecoder`.
    :param outputs: ``(N, output_dim)`` oracle outputs on private faces (the attacker sees these, not the faces).
    :param labels: ``(N,)`` the identity of each.
    """
    t0 = time.perf_counter()
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    cls = labels.unique()
    mean = torch.stack([outputs[labels == c].float().mean(0) for c in cls])
    dev = next(decoder.parameters()).device
    images = decoder(mean.to(dev)).cpu()
    return InversionResult(images, cls, torch.full((len(cls),), float("nan")), time.perf_counter() - t0,
                           {"decoded": "mean output", "output": decoder.output})
