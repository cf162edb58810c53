"""Co-training, as the paper does it: the strategy and the FR network trained together over one FR training run.

One env episode is one whole FR training run (``episode_steps`` FR updates from fresh weights), so an agent that
learns *during* the episode (REINFORCE after every step, PPO every ``n_steps``) is trained against the FR network
it is shaping, and the FR network is trained on the mixes of a strategy that keeps changing: the two are
adversaries for the whole run. :func:`cotrain` runs exactly that episode with any agent built on the env (the
paper's :class:`~agents.reinforce.Reinforce`, an SB3 algorithm, or a user's own with ``learn(total_timesteps)``),
and keeps the FR model at the end of it (:class:`FinalModel`): the co-trained model, the one to attack. The env's
``reset`` after the episode would replace it with fresh weights; SB3 collects rollouts of ``n_steps`` and may step
past the episode's end into a new one, which changes nothing kept.

The other mode, a frozen policy (an agent trained over earlier episodes, then run greedily over a fresh FR run:
:func:`agents.evaluation.run_episode`), stays available; it is not the paper's method.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from fr_models.trainer import FRTrainer

__all__ = ["CoTrainResult", "FinalModel", "cotrain"]


class FinalModel(gym.Wrapper):
    """Keeps a copy of the FR model, and what the episode mixed, when the first episode ends.

    :ivar trainer: the FR trainer at the end of the first episode (``None`` before).
    :ivar k_counts: ``{k: faces mixed with that k}`` over the first episode.
    :ivar exposure: the first episode's :meth:`mixup_env.exposure.Exposure.summary`.
    :ivar steps: env steps of the first episode.
    :ivar episode_return: the sum of its rewards.
    :ivar accuracy: the test accuracy at its last step (``info["accuracy"]``).
    :ivar returns: the env reward's own running totals at the episode's end, for a reward that keeps them
        (``totals``, e.g. :class:`privacy.oracle.Scores`: several rewards scored side by side); else empty.
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.trainer: FRTrainer | None = None
        self.k_counts: dict[int, int] = {}
        self.exposure: dict[str, float] = {}
        self.steps = 0
        self.episode_return = 0.0
        self.accuracy = float("nan")
        self.returns: dict[str, float] = {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.trainer is None:
            self.steps += 1
            self.episode_return += float(reward)
            ks, counts = np.unique(np.asarray(info["k_per_sample"]).reshape(-1), return_counts=True)
            for k, c in zip(ks.tolist(), counts.tolist()):
                self.k_counts[int(k)] = self.k_counts.get(int(k), 0) + int(c)
            if terminated or truncated:
                base = self.env.unwrapped
                self.trainer = copy.deepcopy(base.trainer)
                self.exposure = base.exposure.summary()
                self.accuracy = float(info["accuracy"])
                self.returns = {str(k): float(v) for k, v in getattr(base.reward_fn, "totals", {}).items()}
        return obs, reward, terminated, truncated, info


@dataclass
class CoTrainResult:
    """What :func:`cotrain` returns.

    :ivar trainer: the co-trained FR model (the end of the run).
    :ivar agent: the agent, trained over the run.
    :ivar k_distribution: ``{"k": share of faces mixed with k}`` over the run.
    :ivar exposure: the run's exposure summary.
    :ivar steps: FR updates in the run.
    :ivar episode_return: the run's summed reward.
    :ivar accuracy: the co-trained model's test accuracy at the end of the run.
    :ivar returns: :attr:`FinalModel.returns`.
    """

    trainer: FRTrainer
    agent: Any
    k_distribution: dict[str, float]
    exposure: dict[str, float]
    steps: int
    episode_return: float = float("nan")
    accuracy: float = float("nan")
    returns: dict[str, float] = field(default_factory=dict)


def cotrain(make: Callable[[gym.Env[Any, Any]], Any], env: gym.Env[Any, Any], seed: int | None = None,
            progress: bool = False) -> CoTrainResult:
    """Build an agent on ``env`` and train it over one whole FR training run, alternating with the FR updates.

    :param make: ``env -> agent``; the agent has ``learn(total_timesteps, ...)`` and acts on the env it was given
        (e.g. ``lambda e: Reinforce(e, seed=0)`` or ``lambda e: make_agent("ppo", e, seed=0)``).
    :param env: a mixup_env env whose ``episode_steps`` is the FR run's length.
    :param seed: seed of the run's ``reset`` (REINFORCE; an SB3 agent seeds its env from its own ``seed``).
    :param progress: show the agent's progress bar.
    :raises ValueError: an env that is not a mixup_env env, or an agent whose learning never ended the episode.
    """
    base = env.unwrapped
    if not hasattr(base, "episode_steps") or not hasattr(base, "exposure"):
        raise ValueError(f"cotrain needs a mixup_env env, got {type(base).__name__}")
    wrapped = FinalModel(env)
    agent = make(wrapped)
    steps = int(base.episode_steps)
    if "seed" in inspect.signature(agent.learn).parameters:
        agent.learn(steps, seed=seed, progress_bar=progress)
    else:  # SB3's learn takes no seed (the model's own seed seeds its env)
        agent.learn(steps, progress_bar=progress)
    if wrapped.trainer is None:
        raise ValueError(f"the agent stepped the env {wrapped.steps} times without ending its episode of {steps} "
                         "FR updates: its learn(total_timesteps) must step the env it was built on")
    total = sum(wrapped.k_counts.values())
    dist = {str(k): c / total for k, c in sorted(wrapped.k_counts.items())}
    return CoTrainResult(wrapped.trainer, agent, dist, wrapped.exposure, wrapped.steps, wrapped.episode_return,
                         wrapped.accuracy, wrapped.returns)
