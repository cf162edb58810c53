"""Action codecs: how an env's action becomes mixing decisions (k per sample, and the Dirichlet concentration),
one class per action mode.

A codec owns its Gymnasium space, :meth:`~ActionCodec.decode` (action -> ``(k per sample, alpha)``, refusing an
action outside the space with a message that says what is accepted) and :meth:`~ActionCodec.encode` (k -> the
action that decodes to it). The env holds one (``FrequencyMixupEnv.codec``) and asks it, never the mode string.

>>> codec = make_codec("sample_continuous", k_values=(2, 4, 6), batch_size=3)
>>> codec.space
Box(-1.0, 1.0, (3,), float32)
>>> codec.decode(codec.encode([2, 4, 6]))[0].tolist()
[2, 4, 6]
>>> make_codec("batch_discrete", (2, 3), 4).decode(5)
Traceback (most recent call last):
...
ValueError: action 5 is outside the action space Discrete(2): expected an integer in 0..1, the index of k in k_values=(2, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["ACTION_CODECS", "CAP_FLOOR", "ROUNDINGS", "ActionCodec", "ContinuousCodec", "DiscreteCodec", "make_codec"]


class ActionCodec:
    """The action space of one mode and the translation between its actions and mixing decisions.

    :param k_values: the k an action chooses among.
    :param batch_size: samples per batch (``N``).
    :param dirichlet_alpha: the concentration when the action does not set one.
    :param per_sample: one decision per sample (else one per batch).
    :param control_alpha: the action also sets the concentration (continuous codecs only).
    :param alpha_range: ``(low, high)`` of a controlled concentration (log-uniform over the action's range).
    :param control_cap: the action also sets each mix's cap on its weights (continuous codecs only).
    """

    #: the mode's name (a key of :data:`ACTION_CODECS`)
    mode: str = ""
    discrete: bool = True

    def __init__(self, k_values: Sequence[int], batch_size: int, dirichlet_alpha: float = 1.0,
                 per_sample: bool = False, control_alpha: bool = False,
                 alpha_range: tuple[float, float] = (0.1, 10.0), control_cap: bool = False) -> None:
        self.k_values = tuple(int(k) for k in k_values)
        self.control_cap = bool(control_cap)
        self.batch_size = int(batch_size)
        self.dirichlet_alpha = float(dirichlet_alpha)
        self.per_sample = bool(per_sample)
        self.control_alpha = bool(control_alpha)
        self.alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
        self.mode = f"{'sample' if per_sample else 'batch'}_{'discrete' if self.discrete else 'continuous'}"
        self.space: spaces.Space[Any] = self._space()

    def _space(self) -> spaces.Space[Any]:
        raise NotImplementedError

    def decode(self, action: Any, rng: np.random.Generator | None = None) -> tuple[np.ndarray, float | np.ndarray]:
        """``(k per sample (N,), alpha)`` of an action (alpha: a float, or ``(N,)`` per sample).

        :param rng: the randomness of a dithered continuous codec (the env passes its ``np_random``).
        :raises ValueError: the action is not in :attr:`space`; the message says what is accepted.
        """
        raise NotImplementedError

    def caps(self, action: Any, k: np.ndarray) -> np.ndarray | None:
        """Each sample's cap on its mix's weights, as the action chose it (``None``: the codec does not control
        it); see :class:`ContinuousCodec`."""
        return None

    def encode(self, k: int | Sequence[int], alpha: float | None = None) -> Any:
        """The action that decodes to ``k`` (one k, or one per sample for per-sample codecs).

        :param alpha: the concentration to request (``control_alpha`` codecs; default ``dirichlet_alpha``).
        :raises ValueError: a k not in ``k_values``, or the wrong number of them.
        """
        ks = np.atleast_1d(np.asarray(k))
        if ks.size not in ((1, self.batch_size) if self.per_sample else (1,)):
            raise ValueError(f"give one k{f' or {self.batch_size}' if self.per_sample else ''} for mode "
                             f"{self.mode!r}, got {ks.size}")
        missing = sorted({int(v) for v in ks.tolist()} - set(self.k_values))
        if missing:
            raise ValueError(f"k {missing} not in k_values={self.k_values}")
        lookup = {kv: i for i, kv in enumerate(self.k_values)}
        idx = np.array([lookup[int(v)] for v in ks.tolist()], dtype=np.int64)
        if self.per_sample:
            idx = np.broadcast_to(idx, (self.batch_size,)).copy()
        return self._encode_index(idx, alpha)

    def _encode_index(self, idx: np.ndarray, alpha: float | None) -> Any:
        raise NotImplementedError


class DiscreteCodec(ActionCodec):
    """An action is the index of k in ``k_values``: one (``Discrete(K)``) or one per sample
    (``MultiDiscrete([K] * N)``)."""

    discrete = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.control_alpha or self.control_cap:
            raise ValueError(f"control_{'alpha' if self.control_alpha else 'cap'}=True needs a continuous "
                             f"action_mode, got {self.mode!r}")

    def _space(self) -> spaces.Space[Any]:
        k_count = len(self.k_values)
        if self.per_sample:
            return spaces.MultiDiscrete(np.full(self.batch_size, k_count, dtype=np.int64))
        return spaces.Discrete(k_count)

    def decode(self, action: Any, rng: np.random.Generator | None = None) -> tuple[np.ndarray, float | np.ndarray]:
        n, k_count = self.batch_size, len(self.k_values)
        a = np.asarray(action)
        want_size = n if self.per_sample else 1
        ok = a.size == want_size and np.issubdtype(a.dtype, np.integer) and bool(((a >= 0) & (a < k_count)).all())
        if not ok:
            expected = f"{n} integers, each in" if self.per_sample else "an integer in"
            raise ValueError(f"action {action!r} is outside the action space {self.space}: expected {expected} "
                             f"0..{k_count - 1}, the index of k in k_values={self.k_values}")
        idx = np.broadcast_to(a.reshape(-1), (n,)).astype(np.int64)
        return np.asarray(self.k_values, dtype=np.int64)[idx], self.dirichlet_alpha

    def _encode_index(self, idx: np.ndarray, alpha: float | None) -> Any:
        return idx if self.per_sample else np.int64(idx[0])


class ContinuousCodec(ActionCodec):
    """An action ``a`` in ``[-1, 1]`` (one, or one per sample) picks the nearest of ``K`` evenly spaced points,
    ``k_values[round((a + 1) / 2 * (K - 1))]``; with ``control_alpha`` as many values again set the concentration,
    log-uniformly over ``alpha_range``.

    With ``rounding="dither"`` the position ``x = (a + 1) / 2 * (K - 1)`` is rounded up with probability
    ``x - floor(x)`` and down otherwise, so the *expected* index is ``x``: the mixing (and the reward) change
    smoothly with ``a`` instead of in steps, and an agent whose actions sit near the midpoint still sees the two
    neighbouring k and a slope towards the better one (with nearest rounding every ``a`` in ``(-0.25, 0.25)`` is
    k = 4 for ``K = 5``: flat, no gradient; SAC's policy in the grid never left it).

    With ``control_cap`` a last block of values (one, or one per sample) sets each mix's cap on its weights, as
    InstaHide capped them, within what its k allows: ``c = (a + 1) / 2`` gives ``cap = 1/k + (1 - 1/k) * c``
    (``+1``: uncapped; ``-1``: the most even mix, ``c`` kept at least :data:`CAP_FLOOR` so the cap stays above
    ``1/k``).

    :param rounding: ``"nearest"`` or ``"dither"`` (see above).
    """

    discrete = False

    def __init__(self, *args: Any, rounding: str = "nearest", **kwargs: Any) -> None:
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding={rounding!r} is unknown: accepted {', '.join(ROUNDINGS)}")
        self.rounding = rounding
        super().__init__(*args, **kwargs)

    def _space(self) -> spaces.Space[Any]:
        size = (self.batch_size if self.per_sample else 1) * (1 + self.control_alpha + self.control_cap)
        return spaces.Box(-1.0, 1.0, shape=(size,), dtype=np.float32)

    def caps(self, action: Any, k: np.ndarray) -> np.ndarray | None:
        if not self.control_cap:
            return None
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        block = a[-(a.size // (1 + self.control_alpha + 1)):]
        c = np.maximum((np.broadcast_to(block, k.shape) + 1.0) / 2.0, CAP_FLOOR)
        inv = 1.0 / k.astype(np.float64)
        return np.where(k == 1, 1.0, np.minimum(inv + (1.0 - inv) * c, 1.0))

    def decode(self, action: Any, rng: np.random.Generator | None = None) -> tuple[np.ndarray, float | np.ndarray]:
        n, k_count = self.batch_size, len(self.k_values)
        a = np.asarray(action)
        shape = self.space.shape
        assert shape is not None
        ok = np.issubdtype(a.dtype, np.number) and a.size == int(np.prod(shape)) and bool(np.isfinite(a).all())
        if not ok or bool((np.abs(a) > 1.0 + 1e-6).any()):
            blocks = ["k values", *(["alpha values"] if self.control_alpha else []),
                      *(["cap values"] if self.control_cap else [])]
            raise ValueError(f"action {action!r} is outside the action space {self.space}: expected {shape[0]} finite "
                             "values in [-1, 1]" + (f" ({', then '.join(blocks)})" if len(blocks) > 1 else ""))
        a = np.clip(a.reshape(-1).astype(np.float64), -1.0, 1.0)
        half = a.size // (1 + self.control_alpha + self.control_cap)
        x = (a[:half] + 1.0) / 2.0 * (k_count - 1)
        if self.rounding == "dither":
            if rng is None:
                raise ValueError("a dithered continuous codec needs the randomness to round with: pass rng")
            low = np.floor(x)
            idx = np.minimum(low + (rng.random(x.shape) < x - low), k_count - 1).astype(np.int64)
        else:
            idx = np.rint(x).astype(np.int64)
        k = np.asarray(self.k_values, dtype=np.int64)[np.broadcast_to(idx, (n,))]
        if not self.control_alpha:
            return k, self.dirichlet_alpha
        lo, hi = np.log(self.alpha_range[0]), np.log(self.alpha_range[1])
        alpha = np.exp(lo + (a[half: 2 * half] + 1.0) / 2.0 * (hi - lo))
        return k, (alpha if self.per_sample else float(alpha[0]))

    def _encode_index(self, idx: np.ndarray, alpha: float | None) -> Any:
        k_count = len(self.k_values)
        a = (idx / (k_count - 1) * 2.0 - 1.0) if k_count > 1 else np.zeros(idx.shape)
        if self.control_alpha:
            lo, hi = np.log(self.alpha_range[0]), np.log(self.alpha_range[1])
            target = np.log(self.dirichlet_alpha if alpha is None else alpha)
            pos = 0.0 if hi == lo else float(np.clip((target - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0))
            a = np.concatenate([a, np.full(a.shape, pos)])
        if self.control_cap:  # uncapped
            a = np.concatenate([a, np.ones(idx.shape)])
        return a.astype(np.float32)


#: mode name -> (codec class, per sample)
ROUNDINGS = ("nearest", "dither")
#: the smallest share of the room above ``1/k`` an action-chosen cap keeps (:class:`ContinuousCodec`)
CAP_FLOOR = 0.02
ACTION_CODECS: dict[str, tuple[type[ActionCodec], bool]] = {
    "batch_discrete": (DiscreteCodec, False),
    "sample_discrete": (DiscreteCodec, True),
    "batch_continuous": (ContinuousCodec, False),
    "sample_continuous": (ContinuousCodec, True),
}


def make_codec(mode: str, k_values: Sequence[int], batch_size: int, dirichlet_alpha: float = 1.0,
               control_alpha: bool = False, alpha_range: tuple[float, float] = (0.1, 10.0),
               rounding: str = "nearest", control_cap: bool = False) -> ActionCodec:
    """The codec of ``mode`` (a key of :data:`ACTION_CODECS`); ``rounding``: a continuous codec's (``"nearest"``
    or ``"dither"``, :class:`ContinuousCodec`).

    :raises ValueError: an unknown mode or rounding, ``control_alpha`` or ``rounding="dither"`` with a discrete
        mode.
    """
    if mode not in ACTION_CODECS:
        raise ValueError(f"unknown action_mode {mode!r}; accepted: {', '.join(ACTION_CODECS)}")
    cls, per_sample = ACTION_CODECS[mode]
    if cls is ContinuousCodec:
        return ContinuousCodec(k_values, batch_size, dirichlet_alpha, per_sample, control_alpha, alpha_range,
                               control_cap, rounding=rounding)
    if rounding != "nearest":
        raise ValueError(f"rounding={rounding!r} needs a continuous action_mode, got {mode!r}")
    return cls(k_values, batch_size, dirichlet_alpha, per_sample, control_alpha, alpha_range, control_cap)
