"""Image priors an attacker learns from *public* faces: a latent space whose every point decodes to a face-like
image, so that an inversion searches among faces instead of among all pixel patterns (GMI's idea).

* :class:`EigenfacePrior` (:func:`fit_eigenfaces`): a PCA basis, the cheapest prior (seconds).
* :class:`VAEPrior` (:func:`fit_vae`): a convolutional variational auto-encoder; its decoder is the prior.

Both decode a latent ``z`` with a standard normal prior, ``(n, latent_dim)``, to images ``(n, C, H, W)`` in
``[0, 1]``, differentiably. :class:`ConvDecoder` is also the network of the black-box attack's decoder.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fr_models.trainer import atomic_torch_save, seeded
from privacy.attacks._loop import Schedule, freeze, load_tagged, update
from privacy.attacks.augment import random_augment

__all__ = ["ConvDecoder", "ConvEncoder", "EigenfacePrior", "ImagePrior", "VAEPrior", "fit_eigenfaces", "fit_vae"]


def _check_side(image_size: tuple[int, int]) -> tuple[int, int]:
    h, w = int(image_size[0]), int(image_size[1])
    if h % 16 or w % 16 or h <= 0 or w <= 0:
        raise ValueError(f"image size {h}x{w}: the decoder and encoder need positive multiples of 16")
    return h, w


class ConvDecoder(nn.Module):
    """A vector -> image decoder: a linear layer to a ``(H/16, W/16)`` map, four x2 transposed-conv stages, a sigmoid.

    :param in_dim: length of the input vector.
    :param out_channels: colour planes of the image.
    :param image_size: ``(H, W)``, multiples of 16.
    :param widths: widths of the four stages.
    """

    def __init__(self, in_dim: int, out_channels: int, image_size: tuple[int, int],
                 widths: tuple[int, int, int, int] = (128, 64, 32, 16)) -> None:
        super().__init__()
        h, w = _check_side(image_size)
        self.in_dim, self.image_size, self._grid = int(in_dim), (h, w), (h // 16, w // 16)
        self.fc = nn.Sequential(nn.Linear(in_dim, widths[0] * self._grid[0] * self._grid[1]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        chans = [widths[0], *widths]
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(widths[-1], out_channels, 3, 1, 1)]
        self.body = nn.Sequential(*layers)
        self._w0 = widths[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, in_dim)`` -> ``(n, C, H, W)`` in ``[0, 1]``."""
        h = self.fc(z).view(len(z), self._w0, *self._grid)
        return torch.sigmoid(self.body(h))


class ConvEncoder(nn.Module):
    """An image -> vector encoder: four stride-2 conv stages and a linear layer.

    :param in_channels: colour planes.
    :param image_size: ``(H, W)``, multiples of 16.
    :param out_dim: length of the output vector.
    :param widths: widths of the four stages.
    """

    def __init__(self, in_channels: int, image_size: tuple[int, int], out_dim: int,
                 widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        h, w = _check_side(image_size)
        layers: list[nn.Module] = []
        chans = [in_channels, *widths]
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(widths[-1] * (h // 16) * (w // 16), out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - 0.5) / 0.25)


class ImagePrior(nn.Module):
    """Base class: a frozen map from latents ``(n, latent_dim)`` (prior: standard normal) to images."""

    latent_dim: int
    image_size: tuple[int, int]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, latent_dim)`` -> ``(n, C, H, W)`` in ``[0, 1]``, differentiable in ``z``."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The latent that best explains each image (to start an inversion from a public face)."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)


class EigenfacePrior(ImagePrior):
    """A PCA (eigenface) basis: ``image = mean + sum_j z_j * s_j * e_j``, with ``s_j`` the spread of component ``j``
    over the public faces, so ``z`` has about unit variance per component.

    :param mean: ``(C*H*W,)`` mean face.
    :param basis: ``(C*H*W, k)`` orthonormal components.
    :param scale: ``(k,)`` standard deviation of each component over the public faces.
    :param shape: ``(C, H, W)``.
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("basis", basis)
        self.register_buffer("scale", scale)
        self.shape = tuple(int(s) for s in shape)
        self.latent_dim = int(basis.shape[1])
        self.image_size = (self.shape[1], self.shape[2])
        freeze(self)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        flat = self.mean + (z * self.scale) @ self.basis.T
        return flat.view(len(z), *self.shape).clamp(0.0, 1.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return ((images.reshape(len(images), -1) - self.mean) @ self.basis) / self.scale


def fit_eigenfaces(images: torch.Tensor, n_components: int = 150) -> EigenfacePrior:
    """PCA of the public faces (their mirror images included).

    :param images: ``(N, C, H, W)`` public faces in ``[0, 1]``.
    :param n_components: basis size (at most ``2N - 1``).
    """
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"need at least 2 public faces (N, C, H, W), got {tuple(images.shape)}")
    x = torch.cat([images, images.flip(-1)]).reshape(2 * len(images), -1).double()
    k = min(int(n_components), len(x) - 1)
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    scale = (s[:k] / (len(x) - 1) ** 0.5).clamp_min(1e-8)
    return EigenfacePrior(mean.float(), vh[:k].T.float().contiguous(), scale.float(), tuple(images.shape[1:]))  # type: ignore[arg-type]


class VAEPrior(ImagePrior):
    """The decoder (and encoder) of a variational auto-encoder trained on public faces (see :func:`fit_vae`).

    :param encoder: image -> ``2 * latent_dim`` (mean and log-variance).
    :param decoder: latent -> image.
    """

    def __init__(self, encoder: ConvEncoder, decoder: ConvDecoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim = decoder.in_dim
        self.image_size = decoder.image_size
        freeze(self)

    def train(self, mode: bool = True) -> VAEPrior:
        """Stays in eval mode once trained (batch-norm statistics are part of the prior)."""
        return super().train(False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)[:, : self.latent_dim]

    def save(self, path: str | os.PathLike[str], trained_on: list[str] | None = None) -> Path:
        """Write atomically (load with :meth:`load`, ``weights_only=True``).

        :param trained_on: the public identities it was fitted to (checked by whoever reuses it).
        """
        return atomic_torch_save({"kind": "vae_prior", "latent_dim": self.latent_dim,
                                  "channels": int(self.decoder.body[-1].out_channels),
                                  "image_size": list(self.image_size), "trained_on": list(trained_on or []),
                                  "state": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[VAEPrior, list[str]]:
        """Read a prior written by :meth:`save`; returns it and the identities it was trained on.

        :raises ValueError: the file is not a VAE prior checkpoint.
        """
        state = load_tagged(path, "vae_prior", "VAE prior checkpoint (VAEPrior.save)", device)
        size = tuple(state["image_size"])
        prior = cls(ConvEncoder(state["channels"], size, 2 * state["latent_dim"]),  # type: ignore[arg-type]
                    ConvDecoder(state["latent_dim"], state["channels"], size))  # type: ignore[arg-type]
        prior.load_state_dict(state["state"])
        return prior.to(device), list(state["trained_on"])


def fit_vae(
    images: torch.Tensor,
    latent_dim: int = 64,
    beta: float = 0.05,
    schedule: Schedule = Schedule(150),
) -> VAEPrior:
    """Train a convolutional VAE on the public faces (with random views: shifts, zoom, mirror, brightness).

    The loss per image is the summed squared error plus ``beta`` times the KL divergence to the standard normal;
    a small ``beta`` (0.05) keeps detail (with ``beta = 1`` the decoder of ~1500 LFW faces collapses to an
    average face).

    :param images: ``(N, C, H, W)`` public faces in ``[0, 1]``, sides multiples of 16.
    :param latent_dim: size of the latent.
    :param beta: weight of the KL term.
    :param schedule: passes over the faces, faces per update (at most ``N``), the Adam learning rate (cosine decay
        to zero), the seed of the initialisation, order and views, the device, progress and the fewest updates.
    """
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"need at least 2 public faces (N, C, H, W), got {tuple(images.shape)}")
    size = (int(images.shape[2]), int(images.shape[3]))
    device = schedule.device
    gen = torch.Generator().manual_seed(schedule.seed)
    with seeded(schedule.seed):
        enc = ConvEncoder(images.shape[1], size, 2 * latent_dim).to(device)
        dec = ConvDecoder(latent_dim, images.shape[1], size).to(device)
    x = images.to(device)
    opt, sched = schedule.adam([*enc.parameters(), *dec.parameters()], len(x))
    enc.train()
    dec.train()
    for idx in schedule.batches(len(x), gen, "VAE prior"):
        batch = random_augment(x[idx.to(device)], gen if x.device.type == "cpu" else None,
                               rotate_deg=3.0, contrast=0.05, brightness=0.05)
        mu, logvar = enc(batch).chunk(2, dim=1)
        logvar = logvar.clamp(-10, 10)
        z = mu + torch.randn(mu.shape, generator=gen).to(device) * (0.5 * logvar).exp()
        rec = dec(z)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        update(opt, sched, (F.mse_loss(rec, batch, reduction="none").flatten(1).sum(1) + beta * kl).mean())
    return VAEPrior(enc, dec)
