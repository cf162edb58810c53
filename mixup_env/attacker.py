"""An online data-level attacker for the env's attack-aware reward: trained on public faces only, refitted as the
policy changes, it scores how much of each private face one step's mixes leak to a curious training server.

The threat model is the data-level one of :mod:`privacy.attacks` (the server sees every mixed input and knows the
scheme: mask, k, weights' distribution), made cheap enough to run inside :meth:`FrequencyMixupEnv.step`:

* a PCA basis ``V`` (``components`` directions) of the public faces' masked channels, fitted once;
* a ridge map ``W`` from a mix's PCA coordinates to those of its dominant face, fitted on simulated mixes of the
  public faces drawn with the scheme the policy is using (k distribution of the actions since the last refit, the
  env's Dirichlet concentration and weight cap), refitted every ``refit_every`` steps;
* the leakage of a training face ``x_j`` at a step: the largest cosine similarity, centred on the public mean,
  between ``x_j`` and the attacker's reconstruction of any mix it entered (as the sample or as a partner);
* the leakage it would have had unmixed: the same attacker family on the face itself (its projection on ``V``):
  ``|V^T (x_j - mean)| / |x_j - mean|``.

``unmixed - leakage`` is the leakage the step's mixing prevented
(:attr:`mixup_env.rewards.StepRecord.leakage_prevented`).

A linear attacker can hardly unmix, and this one is no exception: measured on the built-in synthetic faces
(64 components, k = 4; ``tests/test_attacker.py``), the fitted map's squared error to the dominant faces is 0.965
of the mixes' own, and by cosine, the leakage measure, it does not beat the mix itself (128 components, k = 4
mixes: 0.378 fitted, 0.390 unfitted; a small MLP trained on 2048 public mixes did worse on the private ones).
So the leakage scored is essentially how close each face stays to the mixes it entered, given the scheme: a
cheap, honest per-face signal for a reward, not the strongest attack; the privacy
study's ``datalevel_cluster`` (Carlini et al.'s clustering over the whole run) is that.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> public = torch.randn(200, 3, 4, 4, generator=g)
>>> attacker = OnlineAttacker(public, components=16)
>>> faces = torch.randn(8, 3, 4, 4, generator=g)
>>> leak, unmixed = attacker.leakage(faces, faces.clone(), torch.arange(8)[:, None], torch.ones(8, 1))
>>> bool(torch.allclose(leak, unmixed, atol=1e-5))   # unfitted (the identity map), k = 1: nothing prevented
True
>>> attacker.fit({2: 0.5, 3: 0.5}, generator=g)      # now fitted to the scheme in use
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mixup_env.mixing import mix_batch

__all__ = ["OnlineAttacker"]


class OnlineAttacker:
    """A linear data-level attacker on the masked channels, trained on public faces only.

    :param public: ``(M, C, h, w)`` masked channels of the public faces (the env's transform; other identities
        than the private ones).
    :param components: PCA directions kept (at most ``M - 1``).
    :param simulated: simulated public mixes per fit.
    :param ridge: ridge penalty, relative to the mean eigenvalue of the mixes' Gram matrix.
    :param refit_every: the env refits the attacker every this many steps, on the k the policy chose since.
    :param basis_faces: the most public faces the PCA basis is fitted on (a fixed, seeded subset).
    :raises ValueError: fewer than 3 public faces, or a bad option (each named).
    """

    def __init__(self, public: torch.Tensor, components: int = 128, simulated: int = 1024, ridge: float = 1e-3,
                 refit_every: int = 50, basis_faces: int = 1024) -> None:
        if public.ndim < 2 or len(public) < 3:
            raise ValueError(f"the attacker needs at least 3 public faces, got {tuple(public.shape)}: pass "
                             "attacker_faces with faces of identities the FR model does not train on")
        for name, value, low in (("components", components, 1), ("simulated", simulated, 16),
                                 ("refit_every", refit_every, 1), ("basis_faces", basis_faces, 3)):
            if int(value) != value or value < low:
                raise ValueError(f"{name}={value} is invalid: accepted an integer >= {low}")
        if not ridge > 0:
            raise ValueError(f"ridge={ridge} is invalid: accepted a positive number")
        self.public = public.float()
        self.simulated, self.ridge, self.refit_every = int(simulated), float(ridge), int(refit_every)
        self.basis_faces = int(basis_faces)
        flat = self.public.reshape(len(public), -1)
        self.mean = flat.mean(0)
        keep = torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))[: int(basis_faces)]
        centred = flat[keep] - self.mean
        # the basis from the Gram matrix (deterministic, no randomised SVD): V = X^T U / s
        evals, evecs = torch.linalg.eigh(centred.double() @ centred.double().T)
        d = min(int(components), len(keep) - 1)
        top = evals.flip(0)[:d].clamp_min(1e-12)
        self.basis = ((centred.double().T @ evecs.flip(1)[:, :d]) / top.sqrt()).float()  # (D, d), orthonormal
        self.components = d
        self.weights = torch.eye(d)  # until fitted: the identity map (what an unmixed face needs)

    def config(self) -> dict[str, Any]:
        """What the attacker is (for an env's checkpoint fingerprint)."""
        return {"public_faces": len(self.public), "shape": list(self.public.shape[1:]), "components": self.components,
                "simulated": self.simulated, "ridge": self.ridge, "refit_every": self.refit_every,
                "basis_faces": self.basis_faces}

    def state_dict(self) -> dict[str, Any]:
        """The fitted map (the basis is a function of the public faces)."""
        return {"weights": self.weights.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if tuple(state["weights"].shape) != (self.components, self.components):
            raise ValueError(f"an attacker state of shape {tuple(state['weights'].shape)} does not fit this "
                             f"attacker's {self.components} components")
        self.weights = state["weights"].clone().float()

    def _coords(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """PCA coordinates ``(N, d)`` and the centred norms ``(N,)`` of inputs ``(N, ...)``."""
        flat = x.float().reshape(len(x), -1).cpu() - self.mean
        return flat @ self.basis, flat.norm(dim=1).clamp_min(1e-12)

    def fit(self, k_probs: Mapping[int, float], alpha: float = 1.0, max_weight: float | None = None,
            generator: torch.Generator | None = None, batch: int = 64) -> None:
        """Refit the ridge map on ``simulated`` mixes of public faces drawn with the given scheme.

        :param k_probs: ``{k: probability}`` of the mixes' k (the policy's recent choices).
        :param alpha: the Dirichlet concentration of the weights; ``max_weight``: their cap (``None``: uncapped).
        :param generator: the source of the simulation's randomness.
        :param batch: public faces mixed together at a time (at least the largest k).
        """
        ks = torch.tensor([int(k) for k in k_probs], dtype=torch.long)
        p = torch.tensor([float(v) for v in k_probs.values()], dtype=torch.float64)
        if len(ks) == 0 or not bool((p >= 0).all()) or float(p.sum()) <= 0:
            raise ValueError(f"k_probs={dict(k_probs)} is invalid: accepted {{k: probability}} with a positive sum")
        batch = max(int(batch), int(ks.max()))
        if batch > len(self.public):
            raise ValueError(f"the attacker has {len(self.public)} public faces, too few to simulate mixes of "
                             f"k = {int(ks.max())}: accepted at least {batch}")
        zs, ts = [], []
        for _ in range(-(-self.simulated // batch)):
            idx = torch.randperm(len(self.public), generator=generator)[:batch]
            x = self.public[idx]
            k = ks[torch.multinomial(p, batch, replacement=True, generator=generator)]
            mix = mix_batch(x, torch.zeros(batch, dtype=torch.long), k, 1, alpha, generator, max_weight)
            dominant = mix.partners.gather(1, mix.weights.argmax(1, keepdim=True)).squeeze(1)
            zs.append(self._coords(mix.inputs)[0])
            ts.append(self._coords(x[dominant])[0])
        z, t = torch.cat(zs).double(), torch.cat(ts).double()
        gram = z.T @ z
        penalty = self.ridge * float(gram.diagonal().mean())
        self.weights = torch.linalg.solve(gram + penalty * torch.eye(len(gram), dtype=gram.dtype), z.T @ t).float()

    @torch.no_grad()
    def leakage(self, faces: torch.Tensor, mixes: torch.Tensor, partners: torch.Tensor,
                weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each batch face's leakage through the step's mixes, and through itself unmixed.

        :param faces: ``(N, ...)`` the batch's faces as the model would see them unmixed.
        :param mixes: ``(N, ...)`` the step's mixed inputs.
        :param partners: ``(N, k_max)`` batch positions of each mix's faces; ``weights``: ``(N, k_max)`` theirs.
        :return: ``(leakage, unmixed)``, each ``(N,)`` in ``[0, 1]``: the largest centred cosine similarity between
            a face and the reconstruction of any mix it entered with a non-zero weight; and its projection's.
        """
        zf, nf = self._coords(faces)
        zm, _ = self._coords(mixes)
        recon = zm @ self.weights
        recon = recon / recon.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sim = (recon @ zf.T) / nf  # (mix, face): cosine of each reconstruction with each face
        member = torch.zeros_like(sim).scatter_add_(1, partners.cpu().long(), (weights.cpu() > 0).float()) > 0
        leak = sim.masked_fill(~member, -1.0).amax(0).clamp(0.0, 1.0)
        return leak, (zf.norm(dim=1) / nf).clamp(0.0, 1.0)
