"""k-way MixUp of a batch, with soft labels.

Each sample ``i`` of a batch becomes a convex combination of itself and ``k_i - 1`` distinct partners drawn
from the same batch, ``x'_i = sum_j w_ij x_{p_ij}``, with weights ``w_i ~ Dirichlet(alpha * 1_{k_i})``; its
label becomes the same combination of the partners' one-hot (or soft) labels. ``k_i = 1`` leaves the sample
untouched. All randomness comes from one ``torch.Generator``, so a seeded generator gives the same mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "MixResult", "cap_weights", "check_max_weight", "label_entropy", "mix_batch", "mix_inputs", "sample_dirichlet",
    "sample_gamma",
]


def sample_gamma(shape: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gamma(shape, 1) samples drawn from ``generator`` (Marsaglia & Tsang, 2000).

    ``torch.distributions`` cannot take a generator, so this sampler is written out; it is exact (rejection
    sampling, repeated until every entry is accepted).

    :param shape: positive concentration parameters, any shape, floating point.
    :param generator: source of randomness; ``None`` uses torch's global generator.
    :return: samples of the same shape, dtype and device as ``shape``.
    """
    if not bool((shape > 0).all()):
        raise ValueError("gamma shape parameters must be > 0")
    a = shape.to(torch.float64)
    boost = a < 1  # Gamma(a) = Gamma(a + 1) * U**(1/a) for a < 1
    a1 = torch.where(boost, a + 1.0, a)
    d = a1 - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        x = torch.randn(a.shape, generator=generator, dtype=torch.float64, device=a.device)
        u = torch.rand(a.shape, generator=generator, dtype=torch.float64, device=a.device)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    if bool(boost.any()):
        u = torch.rand(a.shape, generator=generator, dtype=torch.float64, device=a.device)
        out = torch.where(boost, out * u ** (1.0 / a), out)
    return out.to(shape.dtype)


def sample_dirichlet(concentration: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dirichlet samples over the last dimension (normalised gamma draws).

    :param concentration: ``(..., k)`` positive parameters.
    :param generator: source of randomness.
    :return: ``(..., k)`` non-negative weights summing to 1 over the last dimension.
    """
    g = sample_gamma(concentration, generator)
    return g / g.sum(-1, keepdim=True)


@dataclass
class MixResult:
    """The outcome of :func:`mix_batch`.

    :ivar inputs: mixed inputs, same shape as the given batch.
    :ivar soft_labels: ``(N, num_classes)``, rows sum to 1.
    :ivar partners: ``(N, k_max)`` indices into the batch; column 0 is the sample itself.
    :ivar weights: ``(N, k_max)`` mixing weights; zero past each sample's own ``k``; rows sum to 1.
    :ivar k: ``(N,)`` number of images mixed into each sample.
    """

    inputs: torch.Tensor
    soft_labels: torch.Tensor
    partners: torch.Tensor
    weights: torch.Tensor
    k: torch.Tensor


def _as_k(k: int | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    kt = torch.as_tensor(k, device=device)
    if kt.is_floating_point() or kt.is_complex() or kt.dtype == torch.bool:
        raise TypeError(f"k must be an int or an integer tensor, got dtype {kt.dtype}")
    kt = kt.long()
    if kt.ndim == 0:
        kt = kt.expand(n)
    if kt.shape != (n,):
        raise ValueError(f"k must be an int or have shape ({n},) (one per sample), got shape {tuple(kt.shape)}")
    if n and int(kt.min()) < 1:
        raise ValueError(f"k must be >= 1 (1 = unmixed), got {int(kt.min())}")
    if n and int(kt.max()) > n:
        raise ValueError(
            f"k={int(kt.max())} needs {int(kt.max())} distinct images of the batch but the batch has {n}: "
            f"accepted k in 1..{n}"
        )
    return kt


def mix_batch(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    k: int | torch.Tensor,
    num_classes: int,
    alpha: float | torch.Tensor = 1.0,
    generator: torch.Generator | None = None,
    max_weight: float | torch.Tensor | None = None,
) -> MixResult:
    """Mix every sample of a batch with ``k - 1`` distinct partners from the same batch.

    :param inputs: ``(N, ...)`` batch (e.g. masked frequency channels).
    :param labels: ``(N,)`` integer class labels, or ``(N, num_classes)`` soft labels.
    :param k: images per mix: one int for the whole batch or an ``(N,)`` integer tensor (per sample),
        each in ``1..N``.
    :param num_classes: number of classes of the soft labels.
    :param alpha: Dirichlet concentration (scalar, or ``(N,)`` per sample); 1 = uniform on the simplex,
        large = nearly equal weights, small = one image dominates.
    :param generator: source of randomness (partners and weights). The draws are made on its device and the
        mix is applied on the inputs' device, so a CPU generator gives the same mix of GPU inputs as of CPU ones
        (and spares the GPU the sampler's many small steps).
    :param max_weight: cap every mixing weight at this value (:func:`cap_weights`; InstaHide capped it at 0.65);
        ``None``: uncapped; an ``(N,)`` tensor: one cap per sample. Each sample's ``k`` must allow its cap
        (``1/k < max_weight <= 1``).
    :return: a :class:`MixResult` (``partners``, ``weights`` and ``k`` on the generator's device).
    """
    n = inputs.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"inputs have {n} samples but labels have {labels.shape[0]}")
    device = generator.device if generator is not None else inputs.device  # where the random draws are made
    kt = _as_k(k, n, device)
    if n == 0:
        raise ValueError("cannot mix an empty batch")
    if labels.ndim == 1:
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
        targets = torch.nn.functional.one_hot(labels.long(), num_classes).to(inputs.dtype)
    elif labels.shape == (n, num_classes):
        targets = labels.to(inputs.dtype)
    else:
        raise ValueError(f"labels must have shape ({n},) or ({n}, {num_classes}), got {tuple(labels.shape)}")
    matrix, partners, weights = _mix_matrix(n, kt, alpha, generator, inputs.dtype, max_weight)
    matrix = matrix.to(inputs.device)
    mixed = _apply(matrix, inputs)
    soft = matrix @ targets
    return MixResult(inputs=mixed, soft_labels=soft, partners=partners, weights=weights, k=kt)


def check_max_weight(max_weight: float, k_values: Sequence[int]) -> float:
    """``max_weight`` as a float, if every k of ``k_values`` can be mixed under it.

    :raises ValueError: a cap outside ``(1/k, 1]`` for some k (k weights summing to 1 cannot all be at most
        ``1/k`` unless equal; k = 1 allows only 1).
    """
    cap = float(max_weight)
    bad = sorted({int(k) for k in k_values if not (cap * int(k) > 1 and cap <= 1) and cap != 1})
    if bad:
        raise ValueError(f"max_weight={max_weight} cannot cap the weights of a mix of k = {bad}: accepted "
                         "1/k < max_weight <= 1 for every k mixed (k = 1: only 1)")
    return cap


def cap_weights(weights: torch.Tensor, max_weight: float | torch.Tensor) -> torch.Tensor:
    """Cap each row's weights at ``max_weight``: the excess of every weight above it is handed to the row's other
    non-zero weights below it, in proportion to them, until none exceeds it (at most ``k`` rounds).

    Rows keep their sum (1), their zeros (a mix's unused slots) and the order of their weights; a row already
    under the cap is unchanged. The caller checks that every row's ``k`` allows the cap (:func:`check_max_weight`).

    :param weights: ``(N, k_max)`` non-negative rows summing to 1.
    :param max_weight: the cap, in ``(1/k, 1]`` for every row's number of non-zero weights ``k``: one for all rows,
        or an ``(N,)`` tensor, one per row.
    """
    w = weights.clone()
    if isinstance(max_weight, torch.Tensor) and max_weight.ndim:
        cap_t = max_weight.to(w.dtype).to(w.device).reshape(-1, 1).expand_as(w)
    else:
        cap_t = torch.full_like(w, float(max_weight))
    cap = cap_t
    used = w > 0
    for _ in range(w.shape[1]):
        over = w > cap
        if not bool(over.any()):
            break
        excess = (w - cap).clamp_min(0).sum(1, keepdim=True)
        w = torch.where(over, cap_t, w)
        room = used & (w < cap)
        share = torch.where(room, w, torch.zeros_like(w))
        total = share.sum(1, keepdim=True)
        # proportional to the weights below the cap (equal shares where those are all 0)
        share = torch.where(total > 0, share / total.clamp_min(1e-300), room.to(w.dtype) / room.sum(1, keepdim=True)
                            .clamp_min(1))
        w = w + excess * share
    return torch.where(cap_t < 1, torch.minimum(w, cap_t), w)


def label_entropy(soft_labels: torch.Tensor) -> torch.Tensor:
    """Each soft label's entropy ``-sum_c t_c log t_c`` in nats, ``(N,)`` (0 for a one-hot label).

    The soft-label cross-entropy of a model with probabilities ``p`` is ``H(t) + KL(t || p)``: the entropy is the
    part no model can learn away. With Dirichlet(1) weights over ``k`` distinct identities its mean is
    ``H_k - 1`` (``H_k`` the k-th harmonic number): 0.50, 0.83, 1.08, 1.28, 1.45 nats for k = 2..6.

    :param soft_labels: ``(N, num_classes)`` non-negative rows summing to 1.
    :raises ValueError: a negative entry (negative label smoothing has no entropy in this sense).
    """
    if soft_labels.ndim != 2:
        raise ValueError(f"soft labels must be (N, num_classes), got shape {tuple(soft_labels.shape)}")
    if bool((soft_labels < 0).any()):
        raise ValueError("soft labels with negative entries have no label entropy (accepted: non-negative rows)")
    t = soft_labels.double()
    return -torch.where(t > 0, t * t.clamp_min(1e-300).log(), torch.zeros_like(t)).sum(1).to(soft_labels.dtype)


def mix_inputs(
    inputs: torch.Tensor,
    k: int | torch.Tensor,
    alpha: float | torch.Tensor = 1.0,
    generator: torch.Generator | None = None,
    max_weight: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inputs half of :func:`mix_batch`, for who has no labels (the data-level attacker simulating the defence):
    the same draws from the same generator give the same mix.

    :return: ``(mixed, partners, weights)`` as in :class:`MixResult`.
    """
    n = inputs.shape[0]
    if n == 0:
        raise ValueError("cannot mix an empty batch")
    kt = _as_k(k, n, generator.device if generator is not None else inputs.device)
    matrix, partners, weights = _mix_matrix(n, kt, alpha, generator, inputs.dtype, max_weight)
    return _apply(matrix.to(inputs.device), inputs), partners, weights


def _apply(matrix: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``matrix @ inputs`` over the batch dimension, in the inputs' memory layout: a channels-last batch (the
    frequency maps the backbones read) is multiplied as the ``(N, h * w * C)`` view it is, not copied to
    ``(N, C * h * w)`` first (a copy that cost as much as the product)."""
    n = inputs.shape[0]
    if inputs.ndim == 4 and not inputs.is_contiguous() and inputs.is_contiguous(memory_format=torch.channels_last):
        nhwc = inputs.permute(0, 2, 3, 1)
        return (matrix @ nhwc.reshape(n, -1)).reshape(nhwc.shape).permute(0, 3, 1, 2)
    return (matrix @ inputs.reshape(n, -1)).reshape(inputs.shape)


def _mix_matrix(
    n: int, kt: torch.Tensor, alpha: float | torch.Tensor, generator: torch.Generator | None, dtype: torch.dtype,
    max_weight: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mix as an ``(N, N)`` matrix (row i holds sample i's weights in its partners' columns), its partners and
    weights, all drawn on ``kt``'s device."""
    device = kt.device
    alpha_t = torch.as_tensor(alpha, dtype=torch.float64, device=device)
    if not bool((alpha_t > 0).all()):
        raise ValueError(f"alpha must be > 0, got {alpha}")
    k_max = int(kt.max())
    # Partners: a random order of the other samples (self excluded), the first k_max - 1 of them.
    scores = torch.rand((n, n), generator=generator, device=device)
    scores.fill_diagonal_(2.0)
    others = scores.topk(k_max - 1, dim=1, largest=False).indices  # = argsort()[:, :k_max-1], without a full sort
    partners = torch.cat([torch.arange(n, device=device).unsqueeze(1), others], dim=1)

    active = torch.arange(k_max, device=device).unsqueeze(0) < kt.unsqueeze(1)  # (N, k_max)
    conc = alpha_t.reshape(-1, 1).expand(n, k_max) if alpha_t.ndim else alpha_t.expand(n, k_max)
    gam = sample_gamma(conc.contiguous(), generator) * active
    weights = gam / gam.sum(1, keepdim=True)
    if isinstance(max_weight, torch.Tensor) and max_weight.ndim:  # one cap per sample (an action chose them)
        caps = max_weight.to(torch.float64).to(device)
        if caps.shape != (n,) or not bool(((caps * kt > 1) & (caps <= 1) | (caps == 1)).all()):
            raise ValueError(f"per-sample caps must be ({n},), each in (1/k, 1] for its sample's k, got "
                             f"{tuple(caps.shape)} caps {caps.min().item():.3f}..{caps.max().item():.3f}")
        weights = cap_weights(weights, caps)
    elif max_weight is not None:
        check_max_weight(max_weight, [int(kt.min())])  # the smallest k is the one a cap can fail
        weights = cap_weights(weights, max_weight)
    weights = weights.to(dtype)
    # Distinct partners, so each weight lands once; one matrix product then mixes the inputs (and the labels): for
    # the batch sizes used here several times faster than gathering the (N, k, ...) partner tensor. k = 1 rows:
    # the weight is exactly 1 on the sample itself and 0 elsewhere, so the mix equals the input exactly.
    matrix = torch.zeros(n, n, dtype=dtype, device=device).scatter_(1, partners, weights)
    return matrix, partners, weights
