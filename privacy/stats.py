"""Statistics of the privacy protocol: chance levels, bootstrap intervals, privacy at matched accuracy.

* :func:`chance_levels`: the two rates a guesser reaches without looking: uniform (``1/C``) and the majority
  class (the share of the most frequent true class: what always answering that class scores).
* :func:`bootstrap_interval`: a percentile bootstrap interval of a mean (resampling the items: reconstructions,
  test faces), seeded.
* :func:`matched_privacy`: a defence's privacy read off the privacy-accuracy frontier of its own runs at another
  accuracy, so that two defences are compared at the same utility ("more private" must not mean "learned less").

>>> lo, hi = bootstrap_interval([1, 0, 1, 1, 0, 1, 0, 1], seed=0)
>>> 0.2 < lo < 0.625 < hi <= 1.0
True
>>> chance_levels([0, 0, 0, 1], num_classes=4)
{'uniform': 0.25, 'majority': 0.75}
>>> matched_privacy([0.2, 0.4, 0.6], [0.9, 0.7, 0.5], at_accuracy=0.5)
0.6
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_interval", "chance_levels", "matched_privacy", "with_interval"]


def chance_levels(labels: Sequence[int] | np.ndarray, num_classes: int) -> dict[str, float]:
    """Uniform (``1/num_classes``) and majority-class accuracy of a guesser on items with true ``labels``.

    :raises ValueError: no labels, or a label outside ``0..num_classes-1``.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    if y.size == 0 or num_classes < 1 or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"need at least one label in 0..{num_classes - 1}, got {y.size} labels "
                         f"({'' if y.size == 0 else f'{y.min()}..{y.max()}'})")
    return {"uniform": 1.0 / num_classes, "majority": float(np.bincount(y).max() / y.size)}


def bootstrap_interval(values: Sequence[float] | np.ndarray, level: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (items resampled with replacement).

    :param values: per-item figures (1/0 hits, distances, ...), at least one, all finite.
    :param level: the interval's coverage, in ``(0, 1)``.
    :param resamples: bootstrap resamples.
    :param seed: the resampling's seed (the same values and seed give the same interval).
    :raises ValueError: no values, a non-finite value, or a level outside ``(0, 1)``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"need at least one value, all finite, got {v.size} values")
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError(f"need 0 < level < 1 and resamples >= 1, got level={level}, resamples={resamples}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def with_interval(values: Sequence[float] | np.ndarray, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """``{"mean", "lo", "hi"}`` of ``values`` (the bootstrap interval of :func:`bootstrap_interval`)."""
    lo, hi = bootstrap_interval(values, level, seed=seed)
    return {"mean": float(np.mean(np.asarray(values, dtype=np.float64))), "lo": lo, "hi": hi}


def matched_privacy(accuracy: Sequence[float], privacy: Sequence[float], at_accuracy: float) -> float:
    """Privacy of a defence at ``at_accuracy``, linearly interpolated along its privacy-accuracy frontier.

    The points (one per run or setting of the defence) are reduced to their Pareto frontier (no other point is
    both more accurate and more private), sorted by accuracy, and interpolated; outside the frontier's accuracy
    range the answer is ``nan`` (no extrapolation: the defence was never seen at that utility).

    :raises ValueError: no points, unequal lengths, or a non-finite figure.
    """
    a, p = np.asarray(accuracy, dtype=np.float64).ravel(), np.asarray(privacy, dtype=np.float64).ravel()
    if a.size == 0 or a.shape != p.shape or not (np.isfinite(a).all() and np.isfinite(p).all()):
        raise ValueError(f"need equal numbers (at least one) of finite accuracies and privacies, got {a.size} and {p.size}")
    keep = [i for i in range(a.size)
            if not any((a[j] >= a[i] and p[j] >= p[i]) and (a[j] > a[i] or p[j] > p[i]) for j in range(a.size))]
    order = sorted(set(keep), key=lambda i: a[i])
    fa, fp = a[order], p[order]
    if not fa[0] - 1e-12 <= at_accuracy <= fa[-1] + 1e-12:
        return float("nan")
    if fa.size == 1:
        return float(fp[0])
    return float(np.interp(at_accuracy, fa, fp))
