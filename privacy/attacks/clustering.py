"""The Carlini-style data-level attack: cluster the training encodings that share a face, restore each face from
its cluster.

Threat model (a curious training server, Carlini et al., 2020, "An Attack on InstaHide"): the server sees every
mixed encoding of the whole training run, over all epochs and all private faces, and knows the scheme (the
transform, k and the weight distribution) and the number of training faces; it holds public faces. Every private
face recurs in about ``epochs x mean(k)`` encodings, as the dominant face of some and a partner in others: an
attack that looks at one mix at a time (:mod:`~privacy.attacks.datalevel`) wastes that.

The attack, in the masked frequency channels the server sees:

1. *Centre* each encoding on the mean encoding of the public faces (mixing preserves the mean: the weights sum to
   1), normalise it, and project it to ``dims`` random directions (Johnson-Lindenstrauss; the geometry is kept,
   the cost of step 2 falls by ``D / dims``).
2. *Cluster* the projections into as many clusters as there are training faces (spherical k-means, seeded,
   k-means++ start): an encoding is pulled towards its dominant face, so the encodings that share one gather.
3. *Restore* each face from its cluster: the mean of the cluster's centred encodings is about
   ``E[w_dom] (x - mu)`` (the partners average out around the mean), so ``mu + mean / E[w_dom]`` estimates the
   face's masked channels, with ``E[w_dom]`` the scheme's expected dominant weight (simulated, the attacker knows
   the scheme). A decoder from masked channels to faces, trained on the public faces (the per-mix attack's
   network with ``k = 1``), turns it into an image.

Each restored face is judged against the identity of the face that dominates most of its cluster (the harness
knows it; the attack does not use it). The encodings are generated twice from the same seed (projected, then
summed per cluster) instead of being held: a run over all of LFW's private faces and 20 epochs would need 3 GB.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from privacy.attacks.datalevel import MixFunction, Unmixer, training_mixes
from privacy.attacks.whitebox import InversionResult

#: ``() -> iterator of (encodings, dominant face index)``, the same every call.
EncodingStream = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]

__all__ = ["ClusterResult", "EncodingStream", "cluster_encodings", "cluster_restore", "expected_dominant_weight"]


@dataclass
class ClusterResult:
    """The clusters of a training run's encodings.

    :ivar restored: ``(n_clusters, K, h, w)`` the restored masked channels of each non-empty cluster's face.
    :ivar sizes: ``(n_clusters,)`` encodings per cluster.
    :ivar majority: ``(n_clusters,)`` the index of the face that dominates most of the cluster's encodings.
    :ivar purity: ``(n_clusters,)`` the share of the cluster's encodings that face dominates.
    """

    restored: torch.Tensor
    sizes: torch.Tensor
    majority: torch.Tensor
    purity: torch.Tensor


@torch.no_grad()
def expected_dominant_weight(mix: MixFunction, n: int = 64, draws: int = 64, seed: int = 0) -> float:
    """``E[largest weight of a mix]`` under the scheme ``mix``, by simulation on ``n`` dummy inputs."""
    gen = torch.Generator().manual_seed(seed)
    return float(torch.cat([mix(torch.zeros(n, 1), gen)[2].max(1).values for _ in range(draws)]).mean())


def _kmeans_pp(p: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ start on unit rows (distance = 1 - cosine)."""
    first = int(torch.randint(len(p), (1,), generator=gen))
    centres = [p[first]]
    best = 1.0 - p @ p[first]
    for _ in range(1, k):
        w = best.clamp_min(0) ** 2
        i = int(torch.multinomial(w / w.sum(), 1, generator=gen)) if float(w.sum()) > 0 else int(torch.randint(len(p), (1,), generator=gen))
        centres.append(p[i])
        best = torch.minimum(best, 1.0 - p @ p[i])
    return torch.stack(centres)


def _assign(p: torch.Tensor, centres: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    return torch.cat([(p[i : i + chunk] @ centres.T).argmax(1) for i in range(0, len(p), chunk)])


def cluster_encodings(
    encodings: EncodingStream,
    num_faces: int,
    mean: torch.Tensor,
    dominant_weight: float,
    dims: int = 256,
    iters: int = 20,
    seed: int = 0,
) -> ClusterResult:
    """Steps 1-3 of the module docstring on the encodings ``encodings()`` yields (twice: it must repeat itself).

    :param encodings: a callable returning an iterator of ``(encodings (b, K, h, w), dominant face index (b,))``;
        called twice, it must yield the same encodings in the same order (the dominant indices are used only
        to report each cluster's majority face and purity).
    :param num_faces: clusters to form (the number of training faces, which the server knows).
    :param mean: ``(K, h, w)`` the mean encoding of the public faces.
    :param dominant_weight: ``E[w_dom]`` of the scheme (:func:`expected_dominant_weight`).
    :param dims: random projections the clustering runs on.
    :param iters: k-means iterations.
    :param seed: seed of the projection, the start and empty-cluster restarts.
    """
    if num_faces < 1 or dims < 1 or iters < 1 or not 0 < dominant_weight <= 1:
        raise ValueError(f"need num_faces, dims, iters >= 1 and 0 < dominant_weight <= 1, got {num_faces}, {dims}, "
                         f"{iters}, {dominant_weight}")
    gen = torch.Generator().manual_seed(seed)
    mu = mean.float().reshape(1, -1).cpu()
    proj = torch.randn(mu.shape[1], dims, generator=gen) / dims**0.5
    ps, doms = [], []
    for z, dom in encodings():
        zc = z.float().reshape(len(z), -1).cpu() - mu
        ps.append(torch.nn.functional.normalize(zc @ proj, dim=1))
        doms.append(dom.cpu())
    p, dom = torch.cat(ps), torch.cat(doms)
    if len(p) < num_faces:
        raise ValueError(f"{len(p)} encodings cannot form {num_faces} clusters: observe more epochs")
    centres = _kmeans_pp(p, num_faces, gen)
    for _ in range(iters):
        assign = _assign(p, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, p)
        counts = torch.bincount(assign, minlength=num_faces)
        empty = (counts == 0).nonzero().squeeze(1)
        sums[empty] = p[torch.randint(len(p), (len(empty),), generator=gen)]  # restart empty clusters
        centres = torch.nn.functional.normalize(sums, dim=1)
    assign = _assign(p, centres)
    counts = torch.bincount(assign, minlength=num_faces)
    full = torch.zeros(num_faces, mu.shape[1])
    seen = 0
    for z, _ in encodings():  # second pass: the cluster sums in the full space
        zc = z.float().reshape(len(z), -1).cpu() - mu
        seen += len(z)
        if seen > len(p):
            break
        full.index_add_(0, assign[seen - len(z) : seen], zc)
    if seen != len(p):
        raise ValueError(f"the encodings changed between passes ({len(p)}, then {'more' if seen > len(p) else seen}): "
                         "the stream must repeat itself")
    keep = (counts > 0).nonzero().squeeze(1)
    restored = mu + full[keep] / counts[keep].unsqueeze(1) / dominant_weight
    majority, purity = [], []
    for c in keep.tolist():
        members = dom[assign == c]
        values, freq = members.unique(return_counts=True)
        majority.append(int(values[freq.argmax()]))
        purity.append(float(freq.max()) / len(members))
    return ClusterResult(restored.reshape(len(keep), *mean.shape), counts[keep], torch.tensor(majority),
                         torch.tensor(purity))


@torch.no_grad()
def cluster_restore(
    images: torch.Tensor,
    labels: torch.Tensor,
    transform: nn.Module,
    mix: MixFunction,
    decoder: Unmixer,
    public_mean: torch.Tensor,
    epochs: int,
    batch_size: int = 64,
    dims: int = 256,
    iters: int = 20,
    seed: int = 0,
) -> InversionResult:
    """The whole attack on the private faces ``images``: simulate the training run's encodings (``epochs``
    passes in shuffled batches, as :func:`~privacy.attacks.datalevel.observe_mixes`), cluster, restore, decode.

    :param images: ``(N, C, H, W)`` the private training faces in ``[0, 1]``.
    :param labels: ``(N,)`` their identities (for judging only).
    :param transform: image -> masked frequency channels.
    :param mix: the defence's mixing scheme.
    :param decoder: masked channels -> face (an :class:`Unmixer` trained with ``k = 1`` on public faces).
    :param public_mean: ``(K, h, w)`` the mean encoding of the public faces.
    :param epochs: passes the server observes.
    :return: one reconstruction per non-empty cluster, classed by its majority face's identity; ``info`` holds
        the clusters' mean purity and size.
    """
    t0 = time.perf_counter()

    def stream() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for mixed, dominant, _ in training_mixes(images, transform, mix, batch_size, epochs, seed):
            yield mixed, dominant

    res = cluster_encodings(stream, len(images), public_mean, expected_dominant_weight(mix, seed=seed), dims, iters,
                            seed)
    dev = next(decoder.parameters()).device
    out = torch.cat([decoder(res.restored[i : i + 256].to(dev)).cpu() for i in range(0, len(res.restored), 256)])
    classes = torch.as_tensor(labels).long().cpu()[res.majority]
    return InversionResult(out, classes, torch.full((len(classes),), float("nan")), time.perf_counter() - t0,
                           {"decoded": "each cluster of encodings restored to one face",
                            "clusters": int(len(res.sizes)), "observed_epochs": int(epochs),
                            "cluster_purity": float(res.purity.mean()),
                            "encodings_per_cluster": float(res.sizes.float().mean())})
