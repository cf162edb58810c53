"""Environment classes, one per file."""

from mixup_env.envs.frequency_mixup import OBS_NAMES, FrequencyMixupEnv

__all__ = ["OBS_NAMES", "FrequencyMixupEnv"]
