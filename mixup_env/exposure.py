"""Exposure accounting: how visible each training face has been in the mixes of a training run.

A face enters a mix as its sample (column 0 of :class:`~mixup_env.mixing.MixResult`'s partners) and as a partner
of ``mean(k) - 1`` other mixes on average, so choosing a small k for one face does not bound its exposure: a
face is as exposed as the largest weight it ever had in any mix. :class:`Exposure` accumulates, per training face
over a run, the mixes it entered (as the sample and in all), the sum of its weights, its largest weight, and how
often it dominated a mix (its weight the largest of that mix). The env keeps one per episode
(:attr:`mixup_env.envs.FrequencyMixupEnv.exposure`).

>>> import torch
>>> e = Exposure(3)
>>> e.update(torch.tensor([0, 1, 2]), torch.tensor([[0, 1], [1, 2], [2, 0]]),
...          torch.tensor([[0.9, 0.1], [0.6, 0.4], [1.0, 0.0]]))
>>> e.mixes.tolist(), [round(w, 3) for w in e.max_weight.tolist()], e.dominated.tolist()
([1, 2, 2], [0.9, 0.6, 1.0], [1, 1, 1])
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Exposure", "batch_max_weight"]


def batch_max_weight(partners: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each batch position's largest weight in any mix of the batch, as the sample or a partner, ``(N,)``.

    :param partners: ``(N, k_max)`` batch positions of each mix's faces (column 0: the sample).
    :param weights: ``(N, k_max)`` their weights (0 past each mix's k).
    """
    n = partners.shape[0]
    out = torch.zeros(n, dtype=weights.dtype, device=weights.device)
    return out.scatter_reduce(0, partners.reshape(-1), weights.reshape(-1), reduce="amax")


class Exposure:
    """Per-face exposure over a run, for ``n`` training faces.

    :param n: number of training faces (indices ``0..n-1``).
    :ivar mixes: ``(n,)`` mixes each face entered with a non-zero weight (as the sample or a partner).
    :ivar as_sample: ``(n,)`` mixes in which it was the sample.
    :ivar weight_sum: ``(n,)`` the sum of its weights over those mixes.
    :ivar max_weight: ``(n,)`` its largest weight in any mix (0: never mixed).
    :ivar dominated: ``(n,)`` mixes in which its weight was the largest.
    :ivar max_leakage: ``(n,)`` its largest leakage to the env's online attacker at any step (:meth:`record_leakage`;
        ``nan`` until scored: envs without an attacker never score it).
    """

    def __init__(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError(f"Exposure needs at least one face, got n={n}")
        self.n = int(n)
        self.mixes = torch.zeros(self.n, dtype=torch.int64)
        self.as_sample = torch.zeros(self.n, dtype=torch.int64)
        self.weight_sum = torch.zeros(self.n, dtype=torch.float64)
        self.max_weight = torch.zeros(self.n, dtype=torch.float64)
        self.dominated = torch.zeros(self.n, dtype=torch.int64)
        self.max_leakage = torch.full((self.n,), float("nan"), dtype=torch.float64)

    def update(self, faces: torch.Tensor, partners: torch.Tensor, weights: torch.Tensor) -> None:
        """Account one batch's mixes.

        :param faces: ``(N,)`` the training-face index of each batch position.
        :param partners: ``(N, k_max)`` batch positions mixed into each sample (column 0: the sample itself).
        :param weights: ``(N, k_max)`` their weights.
        :raises ValueError: shapes that do not agree, or a face index outside ``0..n-1``.
        """
        faces, partners, weights = faces.cpu().long(), partners.cpu().long(), weights.cpu().double()
        if partners.shape != weights.shape or partners.ndim != 2 or partners.shape[0] != faces.shape[0]:
            raise ValueError(f"need faces (N,), partners and weights (N, k_max), got {tuple(faces.shape)}, "
                             f"{tuple(partners.shape)}, {tuple(weights.shape)}")
        if len(faces) and (int(faces.min()) < 0 or int(faces.max()) >= self.n):
            raise ValueError(f"face indices must lie in 0..{self.n - 1}, got {int(faces.min())}..{int(faces.max())}")
        who = faces[partners]  # (N, k_max) training faces
        used = weights > 0
        flat, w = who[used], weights[used]
        self.mixes.scatter_add_(0, flat, torch.ones_like(flat))
        self.as_sample.scatter_add_(0, faces, torch.ones_like(faces))
        self.weight_sum.scatter_add_(0, flat, w)
        self.max_weight.scatter_reduce_(0, flat, w, reduce="amax")
        top = who.gather(1, weights.argmax(1, keepdim=True)).squeeze(1)
        self.dominated.scatter_add_(0, top, torch.ones_like(top))

    def record_leakage(self, faces: torch.Tensor, leakage: torch.Tensor) -> None:
        """Account one step's leakage scores (:meth:`mixup_env.attacker.OnlineAttacker.leakage`) of the faces at
        the batch positions ``faces`` (``(N,)`` training-face indices, ``(N,)`` scores)."""
        faces, leakage = faces.cpu().long(), torch.as_tensor(leakage).cpu().double()
        if faces.shape != leakage.shape:
            raise ValueError(f"need one leakage per face, got {tuple(faces.shape)} faces, {tuple(leakage.shape)} scores")
        self.max_leakage = torch.fmax(self.max_leakage, torch.full_like(self.max_leakage, float("nan")).scatter_reduce(
            0, faces, leakage, reduce="amax", include_self=False))

    def summary(self, thresholds: tuple[float, ...] = (0.65, 0.8)) -> dict[str, float]:
        """Run-level figures over the faces mixed at least once: the mean and median largest weight, the share of
        faces whose largest weight exceeded each of ``thresholds`` (``share_above_0.65``), and the mean mixes
        per face."""
        seen = self.mixes > 0
        if not bool(seen.any()):
            return {"faces_mixed": 0}
        top = self.max_weight[seen]
        out: dict[str, float] = {"faces_mixed": int(seen.sum()), "mean_max_weight": float(top.mean()),
                                 "median_max_weight": float(top.median()),
                                 "mean_mixes": float(self.mixes[seen].double().mean())}
        for t in thresholds:
            out[f"share_above_{t:g}"] = float((top > t).double().mean())
        scored = ~torch.isnan(self.max_leakage)
        if bool(scored.any()):
            out["mean_max_leakage"] = float(self.max_leakage[scored].mean())
        return out

    def state_dict(self) -> dict[str, Any]:
        """Tensors only (``weights_only``-loadable)."""
        return {"n": self.n, "mixes": self.mixes.clone(), "as_sample": self.as_sample.clone(),
                "weight_sum": self.weight_sum.clone(), "max_weight": self.max_weight.clone(),
                "dominated": self.dominated.clone(), "max_leakage": self.max_leakage.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output.

        :raises ValueError: a state for another number of faces.
        """
        if int(state["n"]) != self.n:
            raise ValueError(f"an exposure state of {state['n']} faces cannot be loaded into one of {self.n}")
        for name in ("mixes", "as_sample", "weight_sum", "max_weight", "dominated", "max_leakage"):
            setattr(self, name, state[name].clone().cpu())
