"""Agents for mixup-env: the paper's REINFORCE strategy network, baselines, and SB3 helpers.

Agents only use the environments' public API (spaces, ``reset``/``step``, ``info``, ``action_for_k``,
``split_observation``)."""

from agents.baselines import FixedK, RandomK, ScheduleK, TableK
from agents.evaluation import EpisodeResult, format_k_by_feature, k_by_feature, run_episode
from agents.reinforce import Reinforce, StrategyNetwork
from agents.sb3 import (
    ALGO_DEFAULTS,
    ALGORITHMS,
    INFO_KEYS,
    PPO_DEFAULTS,
    MixingStatsCallback,
    load_obs_normalizer,
    load_vec_normalize,
    make_agent,
    make_ppo,
    make_vec_env,
    save_agent,
    save_vec_normalize,
    vecnormalize_path,
)

__all__ = [
    "ALGORITHMS",
    "ALGO_DEFAULTS",
    "EpisodeResult",
    "INFO_KEYS",
    "PPO_DEFAULTS",
    "FixedK",
    "MixingStatsCallback",
    "RandomK",
    "Reinforce",
    "ScheduleK",
    "TableK",
    "StrategyNetwork",
    "format_k_by_feature",
    "k_by_feature",
    "make_agent",
    "make_ppo",
    "make_vec_env",
    "run_episode",
    "save_agent",
    "vecnormalize_path",
    "load_obs_normalizer",
    "load_vec_normalize",
    "save_vec_normalize",
]
