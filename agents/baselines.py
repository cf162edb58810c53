"""Baseline strategies with the SB3 ``predict`` interface: fixed k, uniformly random k, and a k schedule.

They work with every action mode: they choose k and let the env encode it (``env.unwrapped.action_for_k``).
Batched observations (``(n_envs, D)``, from a VecEnv) give batched actions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from mixup_env import FrequencyMixupEnv, split_observation

__all__ = ["FixedK", "RandomK", "ScheduleK"]


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
