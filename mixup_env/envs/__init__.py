"""Environment classes, one per file."""

from mixup_env.envs.frequency_mixup import (
    ACTION_MODES,
    GLOBAL_FEATURES,
    SAMPLE_FEATURES,
    FrequencyMixupEnv,
    split_observation,
)

__all__ = ["ACTION_MODES", "GLOBAL_FEATURES", "SAMPLE_FEATURES", "FrequencyMixupEnv", "split_observation"]
