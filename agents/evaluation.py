"""Running an agent for an episode, and looking inside a learned per-sample policy.

Any object with an SB3-style ``predict(obs, deterministic=...)`` works: SB3 models, :class:`agents.Reinforce`,
the baselines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from mixup_env import SAMPLE_FEATURES, split_observation

__all__ = ["EpisodeResult", "Predictor", "format_k_by_feature", "k_by_feature", "run_episode"]


class Predictor(Protocol):
    """What an agent needs to be run: SB3's ``predict``."""

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[Any, Any]: ...


@dataclass
class EpisodeResult:
    """One episode of an agent.

    :ivar rewards: per step.
    :ivar k: mean k per step.
    :ivar final_accuracy: clean identification accuracy evaluated at the episode's end.
    :ivar infos: every step's ``info``.
    """

    rewards: np.ndarray
    k: np.ndarray
    final_accuracy: float
    infos: list[dict[str, Any]] = field(repr=False, default_factory=list)

    @property
    def mean_reward(self) -> float:
        return float(self.rewards.mean())

    @property
    def mean_k(self) -> float:
        return float(self.k.mean())


def run_episode(agent: Predictor, env: gym.Env[Any, Any], seed: int | None = None, deterministic: bool = True,
                normalize_obs: Any = None, max_steps: int | None = None) -> EpisodeResult:
    """Run ``agent`` on ``env`` from ``reset(seed=seed)`` until the episode ends (or ``max_steps``).

    :param agent: anything with SB3's ``predict``.
    :param env: a (non-vectorised) mixup_env env.
    :param seed: seed of the reset.
    :param deterministic: passed to ``predict``.
    :param normalize_obs: a function applied to observations before ``predict`` (e.g. a loaded
        ``VecNormalize``'s ``normalize_obs``); the env itself is never wrapped.
    :param max_steps: stop early after this many steps.
    """
    obs, info = env.reset(seed=seed)
    rewards, ks, infos = [], [], []
    done = False
    while not done and (max_steps is None or len(rewards) < max_steps):
        x = normalize_obs(obs) if normalize_obs is not None else obs
        action, _ = agent.predict(x, deterministic=deterministic)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(float(reward))
        ks.append(float(info["k"]))
        infos.append(info)
        done = terminated or truncated
    return EpisodeResult(np.asarray(rewards), np.asarray(ks), float(info["accuracy"]), infos)


def k_by_feature(agent: Predictor, env: gym.Env[Any, Any], steps: int = 200, seed: int | None = 0,
                 bins: int = 4, deterministic: bool = False) -> dict[str, dict[str, Any]]:
    """The distribution of the k an agent chooses per sample, against each per-sample feature.

    Runs the agent for ``steps`` env steps (resetting at episode ends), records each sample's features (from the
    observation the action was chosen on) and its k (from ``info["k_per_sample"]``), cuts every feature into
    ``bins`` quantile bins and tallies k in each.

    :return: ``{feature: {"edges": (bins+1,), "mean_k": (bins,), "counts": (bins, K), "k_values": K,
        "correlation": Pearson r between the feature and k}}``.
    """
    base = env.unwrapped
    k_values = np.asarray(base.k_values)
    feats, ks = [], []
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action, _ = agent.predict(obs, deterministic=deterministic)
        next_obs, _, terminated, truncated, info = env.step(action)
        feats.append(split_observation(obs)[1])
        ks.append(np.asarray(info["k_per_sample"]))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    f = np.concatenate(feats)  # (steps * N, F)
    k = np.concatenate(ks).astype(float)
    table: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(SAMPLE_FEATURES):
        x = f[:, j]
        edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
        which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(len(edges) - 2, 0))
        nb = max(len(edges) - 1, 1)
        counts = np.stack([(k[which == b][:, None] == k_values[None, :]).sum(0) for b in range(nb)])
        mean_k = np.array([k[which == b].mean() if (which == b).any() else np.nan for b in range(nb)])
        corr = float(np.corrcoef(x, k)[0, 1]) if x.std() > 0 and k.std() > 0 else 0.0
        table[name] = {"edges": edges, "mean_k": mean_k, "counts": counts, "k_values": k_values, "correlation": corr}
    return table


def format_k_by_feature(table: dict[str, dict[str, Any]]) -> str:
    """A printable report of :func:`k_by_feature`: per feature, per bin, the mean k and the share of each k."""
    lines = []
    for name, t in table.items():
        ks = " ".join(f"k={int(v):<3d}" for v in t["k_values"])
        lines.append(f"{name} (correlation with k: {t['correlation']:+.2f})")
        lines.append(f"  {'bin':>17}  {'mean k':>6}  {ks}")
        for b in range(len(t["mean_k"])):
            share = t["counts"][b] / max(t["counts"][b].sum(), 1)
            lo, hi = t["edges"][b], t["edges"][b + 1] if b + 1 < len(t["edges"]) else t["edges"][b]
            lines.append(f"  [{lo:6.3f}, {hi:6.3f}]  {t['mean_k'][b]:6.2f}  " + " ".join(f"{s:5.0%}" for s in share))
    return "\n".join(lines)
