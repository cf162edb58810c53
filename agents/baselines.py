"""Baseline strategies with the SB3 ``predict`` interface: fixed k, uniformly random k, a k schedule, and a table
of k per training phase and kind of sample.

They work with every action mode: they choose k and let the env encode it (``env.unwrapped.action_for_k``).
Batched observations (``(n_envs, D)``, from a VecEnv) give batched actions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from mixup_env import SAMPLE_FEATURES, FrequencyMixupEnv, split_observation

__all__ = ["FixedK", "RandomK", "ScheduleK", "TableK"]


def _unwrap(env: Any) -> FrequencyMixupEnv:
    base = env.unwrapped if isinstance(env, gym.Env) else env
    if not isinstance(base, FrequencyMixupEnv):
        raise TypeError(f"expected a mixup_env environment (or a wrapper of one), got {type(base).__name__}")
    return base


class _Baseline:
    """Shared ``predict``: subclasses give :meth:`choose_k` for one observation."""

    def __init__(self, env: Any) -> None:
        self.env = _unwrap(env)
        self.k_values = self.env.k_values

    def choose_k(self, observation: np.ndarray) -> int | np.ndarray:
        raise NotImplementedError

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[Any, None]:
        """SB3-style: ``(action, None)``; a batch of observations gives a batch of actions."""
        obs = np.asarray(observation, dtype=np.float32)
        if obs.ndim == 2:
            return np.stack([np.asarray(self.env.action_for_k(self.choose_k(o))) for o in obs]), None
        return self.env.action_for_k(self.choose_k(obs)), None

    def _check_k(self, k: int) -> int:
        if k not in self.k_values:
            raise ValueError(f"k={k} is not one of the env's k_values={self.k_values}")
        return int(k)


class FixedK(_Baseline):
    """Always the same k.

    :param env: the env (or a wrapper of it).
    :param k: a member of the env's ``k_values``.
    """

    def __init__(self, env: Any, k: int) -> None:
        super().__init__(env)
        self.k = self._check_k(k)

    def choose_k(self, observation: np.ndarray) -> int:
        return self.k

    def __repr__(self) -> str:
        return f"FixedK(k={self.k})"


class RandomK(_Baseline):
    """k drawn uniformly from ``k_values``, independently per sample in per-sample modes.

    :param env: the env (or a wrapper of it).
    :param seed: seed of the baseline's own random stream.
    """

    def __init__(self, env: Any, seed: int | None = None) -> None:
        super().__init__(env)
        self.rng = np.random.default_rng(seed)
        self._per_sample = self.env.codec.per_sample

    def choose_k(self, observation: np.ndarray) -> int | np.ndarray:
        size = self.env.batch_size if self._per_sample else None
        return self.rng.choice(np.asarray(self.k_values), size=size)

    def __repr__(self) -> str:
        return "RandomK()"


class ScheduleK(_Baseline):
    """k moving linearly with training progress (the observation's ``progress`` entry), snapped to ``k_values``.

    :param env: the env (or a wrapper of it).
    :param k_start: k at the start of an episode (default: the smallest of ``k_values``).
    :param k_end: k at its end (default: the largest).
    """

    def __init__(self, env: Any, k_start: int | None = None, k_end: int | None = None) -> None:
        super().__init__(env)
        self.k_start = self._check_k(min(self.k_values) if k_start is None else k_start)
        self.k_end = self._check_k(max(self.k_values) if k_end is None else k_end)

    def choose_k(self, observation: np.ndarray) -> int:
        progress = float(split_observation(observation)[0][0])
        target = self.k_start + progress * (self.k_end - self.k_start)
        return min(self.k_values, key=lambda k: (abs(k - target), k))

    def __repr__(self) -> str:
        return f"ScheduleK(k_start={self.k_start}, k_end={self.k_end})"


class TableK(_Baseline):
    """k from a table indexed by training phase and kind of sample: ``table[phase][kind]``.

    The episode is cut into ``len(table)`` equal phases by the observation's ``progress``; within a batch the
    samples are ranked by one per-sample feature (``feature``, of :data:`mixup_env.SAMPLE_FEATURES`, e.g. their
    clean ``loss``: hard faces last) and cut into ``len(table[0])`` equal kinds. One kind is one k for the whole
    batch (any action mode); more kinds need a per-sample mode. The oracle analysis (:mod:`privacy.oracle`) searches
    over such tables.

    :param env: the env (or a wrapper of it).
    :param table: ``phases x kinds`` members of the env's ``k_values``.
    :param feature: the per-sample feature the kinds are ranked by.
    :raises ValueError: a ragged or empty table, a k the env cannot choose, an unknown feature, or several kinds
        on an env that picks one k per batch.
    """

    def __init__(self, env: Any, table: Any, feature: str = "loss") -> None:
        super().__init__(env)
        rows = [tuple(int(k) for k in row) for row in table]
        if not rows or not rows[0] or len({len(r) for r in rows}) != 1:
            raise ValueError(f"table={table!r} is invalid: accepted phases x kinds of k values (a non-empty, "
                             "rectangular table)")
        for row in rows:
            for k in row:
                self._check_k(k)
        if feature not in SAMPLE_FEATURES:
            raise ValueError(f"feature={feature!r} is unknown: accepted one of {', '.join(SAMPLE_FEATURES)}")
        if len(rows[0]) > 1 and not self.env.codec.per_sample:
            raise ValueError(f"a table of {len(rows[0])} kinds needs a per-sample action mode; this env picks one k "
                             "per batch")
        self.table, self.feature = tuple(rows), feature
        self._column = SAMPLE_FEATURES.index(feature)

    def choose_k(self, observation: np.ndarray) -> int | np.ndarray:
        glob, per = split_observation(observation)
        row = self.table[min(len(self.table) - 1, int(float(glob[0]) * len(self.table)))]
        if len(row) == 1:
            return row[0] if not self.env.codec.per_sample else np.full(len(per), row[0])
        rank = np.argsort(np.argsort(per[:, self._column], kind="stable"), kind="stable")
        return np.asarray(row)[rank * len(row) // len(per)]

    def __repr__(self) -> str:
        return f"TableK(table={self.table}, feature={self.feature!r})"
