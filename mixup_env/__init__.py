"""mixup-env: adaptive frequency-domain MixUp for privacy-preserving face recognition, as Gymnasium envs.

Importing the package registers the environments under the ``mixup_env/`` namespace::

    import gymnasium as gym
    import mixup_env

    env = gym.make("mixup_env/FrequencyMixup-v0")
"""

from __future__ import annotations

import gymnasium

from mixup_env.envs import OBS_NAMES, FrequencyMixupEnv
from mixup_env.mixing import MixResult, mix_batch, sample_dirichlet
from mixup_env.rewards import StepRecord, get_reward, list_rewards, make_reward, register_reward
from mixup_env.transform import (
    PARTIALFACE_DROPPED,
    ChannelMask,
    FrequencyMasking,
    block_dct,
    block_idct,
    low_frequency_channels,
)

__version__ = "0.1.0"

#: Registered environment ids.
ENV_IDS: tuple[str, ...] = ("mixup_env/FrequencyMixup-v0",)

if ENV_IDS[0] not in gymnasium.registry:
    gymnasium.register(id=ENV_IDS[0], entry_point="mixup_env.envs.frequency_mixup:FrequencyMixupEnv")

__all__ = [
    "ENV_IDS",
    "OBS_NAMES",
    "PARTIALFACE_DROPPED",
    "ChannelMask",
    "FrequencyMasking",
    "FrequencyMixupEnv",
    "MixResult",
    "StepRecord",
    "block_dct",
    "block_idct",
    "get_reward",
    "list_rewards",
    "low_frequency_channels",
    "make_reward",
    "mix_batch",
    "register_reward",
    "sample_dirichlet",
]
