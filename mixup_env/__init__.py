"""mixup-env: adaptive frequency-domain MixUp for privacy-preserving face recognition, as Gymnasium envs.

Importing the package registers the environments under the ``mixup_env/`` namespace::

    import gymnasium as gym
    import mixup_env

    env = gym.make("mixup_env/FrequencyMixup-v0")
"""

from __future__ import annotations

import gymnasium

from mixup_env.envs import ACTION_MODES, GLOBAL_FEATURES, SAMPLE_FEATURES, FrequencyMixupEnv, split_observation
from mixup_env.mixing import MixResult, mix_batch, mix_inputs, sample_dirichlet
from mixup_env.rewards import (
    EpisodeStart,
    Reward,
    StepRecord,
    UtilityAware,
    WeightedSum,
    get_reward,
    list_rewards,
    as_reward,
    make_reward,
    register_reward,
)
from mixup_env.transform import (
    PARTIALFACE_DROPPED,
    ChannelMask,
    FrequencyMasking,
    block_dct,
    block_idct,
    low_frequency_channels,
)

__version__ = "0.1.0"

#: Registered environment ids and the action mode each one fixes.
ENV_IDS: dict[str, str] = {
    "mixup_env/FrequencyMixup-v0": "batch_discrete",
    "mixup_env/FrequencyMixupPerSample-v0": "sample_discrete",
    "mixup_env/FrequencyMixupContinuous-v0": "batch_continuous",
    "mixup_env/FrequencyMixupPerSampleContinuous-v0": "sample_continuous",
}

for _id, _mode in ENV_IDS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(
            id=_id, entry_point="mixup_env.envs.frequency_mixup:FrequencyMixupEnv", kwargs={"action_mode": _mode}
        )

__all__ = [
    "ACTION_MODES",
    "ENV_IDS",
    "GLOBAL_FEATURES",
    "PARTIALFACE_DROPPED",
    "ChannelMask",
    "FrequencyMasking",
    "FrequencyMixupEnv",
    "MixResult",
    "SAMPLE_FEATURES",
    "EpisodeStart",
    "Reward",
    "StepRecord",
    "UtilityAware",
    "WeightedSum",
    "as_reward",
    "block_dct",
    "block_idct",
    "get_reward",
    "list_rewards",
    "low_frequency_channels",
    "make_reward",
    "mix_batch",
    "mix_inputs",
    "register_reward",
    "sample_dirichlet",
    "split_observation",
]
