"""Agents for mixup-env: SB3 helpers now; the paper's REINFORCE strategy network and baselines follow.

Agents only use the environments' public API (spaces, ``reset``/``step``, ``info``)."""

from agents.sb3 import INFO_KEYS, PPO_DEFAULTS, MixingStatsCallback, make_ppo, save_agent

__all__ = ["INFO_KEYS", "PPO_DEFAULTS", "MixingStatsCallback", "make_ppo", "save_agent"]
