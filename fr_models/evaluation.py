"""Evaluation of face-recognition models: embedding extraction, closed-set identification and pair verification.

Everything here is written with NumPy (and :func:`scipy.stats.rankdata`), with no scikit-learn dependency.

* :func:`extract_embeddings` runs a backbone over a tensor of inputs in batches, without gradients; with ``flip``
  it gives the usual *flip test* embedding (the sum of the L2-normalised embeddings of a face and its mirror image).
* :func:`identification_accuracy` gives closed-set top-k accuracy from a ``(N, C)`` logits matrix;
  :func:`balanced_accuracy` the mean per-identity accuracy, and :func:`chance_levels` what a classifier with no
  information scores (uniform guessing, and the constant guess of the largest training identity).
* Verification works on *pairs*: a similarity score per pair (:func:`verification_scores`, cosine similarity) and a
  boolean ``same`` per pair (same identity or not). A pair is accepted as "same" iff ``score > threshold``
  (strictly greater) everywhere in this module.

  - :func:`roc_auc`: the area under the ROC curve, in its Mann-Whitney form (ties count 1/2).
  - :func:`tar_at_far`: the true-accept rate at a threshold chosen from the impostor score distribution.
  - :func:`best_threshold`: the threshold that maximises accuracy on a set of pairs.
  - :func:`verify_kfold`: the LFW protocol (threshold chosen on 9 folds, accuracy on the 10th), returning a
    :class:`VerificationResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "VerificationResult",
    "balanced_accuracy",
    "best_threshold",
    "chance_levels",
    "extract_embeddings",
    "identification_accuracy",
    "roc_auc",
    "tar_at_far",
    "verification_scores",
    "verify_kfold",
]

#: Tolerance added to ``far * num_impostors`` before flooring, so that e.g. ``0.29 * 100`` (28.999999999999996 in
#: floating point) allows 29 impostors, as intended.
_FAR_COUNT_EPS = 1e-9


# --------------------------------------------------------------------------------------------------- embeddings


def extract_embeddings(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    batch_size: int = 256,
    progress: bool = False,
    device: str | torch.device | None = None,
    flip: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run ``model`` over ``inputs`` in batches under :func:`torch.no_grad` and return the stacked outputs on CPU.

    With ``flip`` (a function that mirrors a batch of inputs: ``x.flip(-1)`` for pixels,
    :meth:`mixup_env.transform.FrequencyMasking.hflip` for masked DCT channels), each embedding is the flip test's:
    ``normalize(model(x)) + normalize(model(flip(x)))``, as face-recognition evaluations usually report (ArcFace's
    LFW protocol). It costs a second forward pass; cosine scores and margin-head logits are unchanged by its scale.

    If ``model`` is an :class:`torch.nn.Module`, it is put in eval mode during extraction (so batch-norm uses its
    running statistics and the result does not depend on ``batch_size``), and the training flag of the module and
    of every submodule is restored afterwards, even if the model raises.

    :param model: a callable mapping a batch ``(B, ...)`` to embeddings ``(B, D)`` (e.g. a backbone).
    :param inputs: the inputs, ``(N, ...)`` with ``N >= 1``.
    :param batch_size: the number of inputs per call of ``model`` (``>= 1``).
    :param progress: show a tqdm progress bar (desc ``"embeddings"``, counted in inputs).
    :param device: move each batch to this device before calling ``model``. The model itself is not moved: it must
        already be on that device. ``None`` leaves the batches where ``inputs`` is.
    :param flip: mirror the inputs and add the two normalised embeddings (the flip test); ``None``: plain outputs.
    :return: the embeddings, ``(N, D)`` (the shape and dtype ``model`` returns, concatenated along dim 0), on CPU,
        without gradient history.
    :raises TypeError: if ``inputs`` is not a tensor, or ``model`` does not return one.
    :raises ValueError: if ``inputs`` is empty (0-d or ``N == 0``), ``batch_size < 1``, or ``model`` returns a
        number of rows different from its batch size.
    """
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be non-empty with a batch dimension, got shape {tuple(inputs.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if flip is not None and not callable(flip):
        raise TypeError(f"flip must be a callable that mirrors a batch of inputs or None, got {type(flip).__name__}")

    modes: list[tuple[nn.Module, bool]] = []
    if isinstance(model, nn.Module):
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
    n = inputs.shape[0]
    outputs: list[torch.Tensor] = []
    try:
        with torch.no_grad(), tqdm(total=n, desc="embeddings", unit="input", disable=not progress) as bar:
            for start in range(0, n, batch_size):
                batch = inputs[start : start + batch_size]
                if device is not None:
                    batch = batch.to(device)
                out = model(batch)
                if not isinstance(out, torch.Tensor):
                    raise TypeError(f"model must return a torch.Tensor, got {type(out).__name__}")
                if out.dim() == 0 or out.shape[0] != batch.shape[0]:
                    raise ValueError(
                        f"model returned shape {tuple(out.shape)} for a batch of {batch.shape[0]} inputs"
                    )
                if flip is not None:
                    mirrored = model(flip(batch))
                    if not isinstance(mirrored, torch.Tensor) or mirrored.shape != out.shape:
                        raise ValueError("model must return the same shape for a batch and its mirror image")
                    out = nn.functional.normalize(out, dim=1) + nn.functional.normalize(mirrored, dim=1)
                outputs.append(out.detach().cpu())
                bar.update(batch.shape[0])
    finally:
        for module, training in modes:
            module.training = training
    return torch.cat(outputs, dim=0)


# ------------------------------------------------------------------------------------------------ identification


def identification_accuracy(
    logits: torch.Tensor | np.ndarray, labels: Any, topk: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Closed-set identification accuracy: the fraction of samples whose true class is among the top ``k`` scores.

    The rank of the true class is the number of classes with a strictly larger score, plus the number of classes
    with an *equal* score and a smaller index (the tie-break of :func:`numpy.argmax`), so ``top1`` is exactly the
    accuracy of ``argmax``. A sample is correct at ``k`` iff that rank is ``< k``.

    :param logits: the class scores, ``(N, C)`` with ``N >= 1`` and ``C >= 1`` (logits, probabilities or
        similarities: only their order matters). Must be finite.
    :param labels: the true classes, ``N`` integers in ``[0, C)`` (tensor, array or sequence).
    :param topk: the values of ``k`` (integers ``>= 1``). A ``k`` larger than ``C`` is clipped to ``C`` (so its
        accuracy is 1.0); the key keeps the requested ``k``.
    :return: ``{f"top{k}": accuracy}`` for each ``k`` in ``topk``, accuracies as floats in ``[0, 1]``.
    :raises ValueError: on a shape mismatch (the message names both lengths), empty input, labels out of range or
        not integers, non-finite logits, or an invalid ``k``.
    """
    scores = _to_numpy(logits).astype(np.float64, copy=False)
    if scores.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, C), got shape {scores.shape}")
    n, c = scores.shape
    if n == 0 or c == 0:
        raise ValueError(f"logits must have at least one sample and one class, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("logits must be finite (found NaN or inf)")
    y = _to_numpy(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"logits and labels must have the same length, got {n} and {len(y)}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"labels must be in [0, {c}), got values in [{y.min()}, {y.max()}]")
    ks = list(topk)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every k in topk must be a positive integer, got {k!r}")

    true = scores[np.arange(n), y][:, None]
    before = np.arange(c)[None, :] < y[:, None]
    rank = np.sum(scores > true, axis=1) + np.sum((scores == true) & before, axis=1)
    return {f"top{k}": float(np.mean(rank < min(int(k), c))) for k in ks}


def balanced_accuracy(predictions: Any, labels: Any) -> float:
    """Mean over identities of the per-identity top-1 accuracy (each identity present in ``labels`` counts once,
    however many test images it has).

    :param predictions: ``(N,)`` predicted classes (or ``(N, C)`` scores, reduced by ``argmax``).
    :param labels: ``(N,)`` true classes.
    :raises ValueError: empty input or a length mismatch.
    """
    pred, y = _to_numpy(predictions), _to_numpy(labels).reshape(-1)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    pred = pred.reshape(-1)
    if len(pred) != len(y) or len(y) == 0:
        raise ValueError(f"predictions and labels must be non-empty and of the same length, got {len(pred)} and "
                         f"{len(y)}")
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def chance_levels(train_labels: Any, test_labels: Any, num_classes: int) -> dict[str, float]:
    """What identification scores without looking at the faces.

    :param train_labels: the training identities (the majority class is the largest of them).
    :param test_labels: the test identities.
    :param num_classes: the number of classes the model chooses among.
    :return: ``uniform`` (``1 / num_classes``, top-1 of a uniform guess), ``majority_class`` (top-1 of always
        answering the largest training identity), ``majority_class_balanced`` (its balanced accuracy: 1 over the
        number of test identities, or 0 when the majority class has no test image).
    """
    train, test = _to_numpy(train_labels).reshape(-1), _to_numpy(test_labels).reshape(-1)
    if len(train) == 0 or len(test) == 0 or num_classes < 1:
        raise ValueError(f"need training and test labels and num_classes >= 1, got {len(train)}, {len(test)}, "
                         f"{num_classes}")
    values, counts = np.unique(train, return_counts=True)
    majority = values[np.argmax(counts)]  # ties: the smallest label, as argmax would
    constant = np.full(len(test), majority)
    return {"uniform": 1.0 / num_classes, "majority_class": float(np.mean(test == majority)),
            "majority_class_balanced": balanced_accuracy(constant, test)}


# -------------------------------------------------------------------------------------------------- verification


@dataclass
class VerificationResult:
    """The result of :func:`verify_kfold`.

    :param accuracy_mean: the mean over folds of the held-out accuracy.
    :param accuracy_std: the population standard deviation (:func:`numpy.std`, ``ddof=0``) of the fold accuracies.
    :param fold_accuracies: the accuracy on each fold, in sorted fold order.
    :param thresholds: the threshold chosen (on the other folds) for each fold, in the same order.
    :param roc_auc: the ROC AUC over all pairs (:func:`roc_auc`).
    :param tar_at_far: ``{far: TAR}`` over all pairs (:func:`tar_at_far`), keyed by the requested FAR.
    :param num_pairs: the number of pairs.
    :param num_same: the number of same-identity (genuine) pairs.
    :param num_diff: the number of different-identity (impostor) pairs.
    """

    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: list[float]
    thresholds: list[float]
    roc_auc: float
    tar_at_far: dict[float, float]
    num_pairs: int
    num_same: int
    num_diff: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (built-in floats and ints only).

        The keys of ``tar_at_far`` become ``str(float(far))``, e.g. ``"0.01"``, ``"0.001"``, ``"1e-05"``: Python's
        shortest round-trip form, so ``float(key)`` gives back the FAR exactly.

        :return: a dict with the same field names.
        """
        return {
            "accuracy_mean": float(self.accuracy_mean),
            "accuracy_std": float(self.accuracy_std),
            "fold_accuracies": [float(a) for a in self.fold_accuracies],
            "thresholds": [float(t) for t in self.thresholds],
            "roc_auc": float(self.roc_auc),
            "tar_at_far": {str(float(far)): float(tar) for far, tar in self.tar_at_far.items()},
            "num_pairs": int(self.num_pairs),
            "num_same": int(self.num_same),
            "num_diff": int(self.num_diff),
        }


def verification_scores(emb1: torch.Tensor | np.ndarray, emb2: torch.Tensor | np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair of rows: row ``i`` of ``emb1`` with row ``i`` of ``emb2``.

    Rows are L2-normalised first (a zero row stays zero, so its similarity with anything is 0).

    :param emb1: the first embedding of each pair, ``(N, D)``.
    :param emb2: the second embedding of each pair, ``(N, D)``.
    :return: the scores, ``(N,)`` float64 in ``[-1, 1]``.
    :raises ValueError: if the inputs are not 2-D or their shapes differ.
    """
    a = _to_numpy(emb1).astype(np.float64, copy=False)
    b = _to_numpy(emb2).astype(np.float64, copy=False)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"emb1 and emb2 must be 2-D (N, D), got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"emb1 and emb2 must have the same shape, got {a.shape} and {b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.clip(np.sum(a * b, axis=1), -1.0, 1.0)


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """The area under the ROC curve, in its Mann-Whitney form.

    The probability that a random same-identity pair scores higher than a random different-identity pair, a tie
    counting 1/2: ``(R_same - n_same (n_same + 1) / 2) / (n_same n_diff)`` with ``R_same`` the sum of the average
    ranks (:func:`scipy.stats.rankdata`) of the same-identity scores. 1.0: perfectly separated, 0.5: chance,
    0.0: perfectly reversed.

    :param scores: the similarity of each pair, ``(N,)``, finite.
    :param same: whether each pair is of the same identity, ``(N,)``, boolean-like (bool, or 0/1 values).
    :return: the AUC in ``[0, 1]``.
    :raises ValueError: on a length mismatch, non-finite scores, non-boolean ``same``, or no same or no
        different pair.
    """
    s, y = _check_pairs(scores, same, need_both=True)
    n_same = int(y.sum())
    n_diff = len(y) - n_same
    ranks = rankdata(s, method="average")
    u = float(ranks[y].sum()) - n_same * (n_same + 1) / 2.0
    return u / (n_same * n_diff)


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """The true-accept rate at a false-accept rate of at most ``far``.

    Convention (a pair is accepted iff ``score > t``): with ``n`` different-identity (impostor) pairs, at most
    ``m = floor(far * n)`` of them may be accepted. The threshold ``t`` is the smallest value such that the fraction
    of impostor scores ``> t`` is ``<= far``, which is the ``(m + 1)``-th largest impostor score (ties only lower
    the number accepted). TAR is the fraction of same-identity pairs with ``score > t``.

    With fewer impostor pairs than ``1 / far`` (``m == 0``) no impostor may be accepted: the result is the TAR at
    FAR 0, with ``t`` the largest impostor score. ``far == 0`` gives the same. ``far >= 1`` accepts every pair
    (TAR 1.0).

    :param scores: the similarity of each pair, ``(N,)``, finite.
    :param same: whether each pair is of the same identity, ``(N,)``, boolean-like.
    :param far: the false-accept rate, in ``[0, 1]``.
    :return: the TAR in ``[0, 1]``.
    :raises ValueError: on a length mismatch, non-finite scores, non-boolean ``same``, no same or no different
        pair, or ``far`` outside ``[0, 1]``.
    """
    s, y = _check_pairs(scores, same, need_both=True)
    t = _far_threshold(s[~y], far)
    return float(np.mean(s[y] > t))


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold maximising the accuracy of "same iff ``score > threshold``" on these pairs.

    Candidates: the midpoints between consecutive sorted unique scores, plus the two extremes: the largest float
    below the smallest score (accept every pair) and the largest score (reject every pair). Among equally accurate
    candidates the smallest is returned. Runs in ``O(N log N)``.

    :param scores: the similarity of each pair, ``(N,)`` with ``N >= 1``, finite.
    :param same: whether each pair is of the same identity, ``(N,)``, boolean-like (one class alone is allowed).
    :return: ``(threshold, accuracy)`` with accuracy the fraction of pairs classified correctly at that threshold.
    :raises ValueError: on a length mismatch, empty input, non-finite scores or non-boolean ``same``.
    """
    s, y = _check_pairs(scores, same, need_both=False)
    return _best_threshold(s, y)


def verify_kfold(
    scores: np.ndarray,
    same: np.ndarray,
    folds: np.ndarray | None = None,
    n_folds: int = 10,
    fars: Sequence[float] = (1e-2, 1e-3),
) -> VerificationResult:
    """Verification accuracy by the LFW protocol, with ROC AUC and TAR@FAR over all pairs.

    For each fold ``f`` (in sorted order of fold ids), the threshold is chosen with :func:`best_threshold` on the
    pairs of all *other* folds, and the accuracy of "same iff ``score > threshold``" is measured on fold ``f``.
    The mean and the population standard deviation (:func:`numpy.std`) of these accuracies are reported.

    :param scores: the similarity of each pair, ``(N,)``, finite (e.g. from :func:`verification_scores`).
    :param same: whether each pair is of the same identity, ``(N,)``, boolean-like.
    :param folds: the fold of each pair, ``(N,)`` (e.g. LFW's ``pair_fold``, 0..9); any values, the folds being
        the distinct values. ``None``: the pairs are split in order into ``n_folds`` contiguous folds of sizes
        differing by at most one (as in LFW's ``pairs.txt``).
    :param n_folds: the number of folds when ``folds`` is ``None`` (``2 <= n_folds <= N``); ignored otherwise.
    :param fars: the false-accept rates at which to report the TAR (:func:`tar_at_far`).
    :return: the :class:`VerificationResult`.
    :raises ValueError: on a length mismatch (the message names the lengths), non-finite scores, non-boolean
        ``same``, no same or no different pair, fewer than 2 folds, an empty fold, or a FAR outside ``[0, 1]``.
    """
    s, y = _check_pairs(scores, same, need_both=True)
    n = len(s)
    if folds is None:
        if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
            raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
        if n_folds > n:
            raise ValueError(f"n_folds={n_folds} would leave empty folds with only {n} pairs")
        sizes = [len(part) for part in np.array_split(np.arange(n), int(n_folds))]
        fold_of = np.repeat(np.arange(int(n_folds)), sizes)
    else:
        fold_of = _to_numpy(folds)
        if fold_of.ndim != 1:
            raise ValueError(f"folds must be 1-D, got shape {fold_of.shape}")
        if len(fold_of) != n:
            raise ValueError(f"scores and folds must have the same length, got {n} and {len(fold_of)}")
    fold_ids = np.unique(fold_of)
    if len(fold_ids) < 2:
        raise ValueError(f"need at least 2 folds, got {len(fold_ids)}")
    far_list = [_check_far(f) for f in fars]

    accuracies: list[float] = []
    thresholds: list[float] = []
    for fid in fold_ids:
        test = fold_of == fid
        if not test.any():  # pragma: no cover - impossible with ids from np.unique, kept as a guard
            raise ValueError(f"fold {fid!r} is empty")
        t, _ = _best_threshold(s[~test], y[~test])
        accuracies.append(float(np.mean((s[test] > t) == y[test])))
        thresholds.append(float(t))

    impostors = s[~y]
    tars = {float(f): float(np.mean(s[y] > _far_threshold(impostors, f))) for f in far_list}
    n_same = int(y.sum())
    return VerificationResult(
        accuracy_mean=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        fold_accuracies=accuracies,
        thresholds=thresholds,
        roc_auc=roc_auc(s, y),
        tar_at_far=tars,
        num_pairs=n,
        num_same=n_same,
        num_diff=n - n_same,
    )


# ------------------------------------------------------------------------------------------------------- helpers


def _to_numpy(x: Any) -> np.ndarray:
    """A NumPy array from a tensor (detached, on CPU), an array or a sequence."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_pairs(scores: Any, same: Any, need_both: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validate per-pair ``scores`` and ``same``; return them as float64 and bool arrays."""
    s = _to_numpy(scores)
    y = _to_numpy(same)
    if s.ndim != 1 or y.ndim != 1:
        raise ValueError(f"scores and same must be 1-D, got shapes {s.shape} and {y.shape}")
    if len(s) != len(y):
        raise ValueError(f"scores and same must have the same length, got {len(s)} and {len(y)}")
    if len(s) == 0:
        raise ValueError("scores and same must be non-empty")
    if s.dtype.kind not in "biuf":
        raise ValueError(f"scores must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (found NaN or inf)")
    if y.dtype != np.bool_:
        if y.dtype.kind not in "iuf" or not np.all((y == 0) | (y == 1)):
            raise ValueError(f"same must be boolean-like (bool or 0/1 values), got dtype {y.dtype}")
        y = y == 1
    if need_both:
        n_same = int(y.sum())
        if n_same == 0 or n_same == len(y):
            raise ValueError(
                f"need at least one same and one different pair, got {n_same} same and {len(y) - n_same} different"
            )
    return s, y


def _check_far(far: Any) -> float:
    """Validate a false-accept rate."""
    f = float(far)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far!r}")
    return f


def _far_threshold(impostors: np.ndarray, far: float) -> float:
    """The threshold of :func:`tar_at_far`: the ``(floor(far * n) + 1)``-th largest impostor score."""
    f = _check_far(far)
    n = len(impostors)
    m = math.floor(f * n + _FAR_COUNT_EPS)
    if m >= n:
        return -math.inf
    return float(np.sort(impostors)[::-1][m])


def _best_threshold(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """:func:`best_threshold` on validated arrays."""
    unique, inverse = np.unique(s, return_inverse=True)
    k = len(unique)
    same_per = np.bincount(inverse, weights=y.astype(np.float64), minlength=k)
    diff_per = np.bincount(inverse, weights=(~y).astype(np.float64), minlength=k)
    # Candidate i (0..k) puts the first i unique values at or below the threshold.
    same_le = np.concatenate([[0.0], np.cumsum(same_per)])
    diff_le = np.concatenate([[0.0], np.cumsum(diff_per)])
    correct = (same_le[-1] - same_le) + diff_le
    i = int(np.argmax(correct))  # first maximum: the smallest threshold
    if i == 0:
        t = float(np.nextafter(unique[0], -np.inf))
    elif i == k:
        t = float(unique[-1])
    else:
        lo, hi = unique[i - 1], unique[i]
        mid = lo + (hi - lo) / 2.0
        # Between adjacent floats the midpoint can round up to ``hi``; ``lo`` then separates them the same way.
        t = float(mid if lo <= mid < hi else lo)
    return t, float(correct[i] / len(s))
