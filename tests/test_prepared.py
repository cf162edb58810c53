"""mixup_env.prepared and the env built from prepared faces and an FR config."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import mixup_env  # noqa: F401
from fr_models.data import load_faces
from fr_models.recipes import get_recipe
from mixup_env import FrequencyMixupEnv
from mixup_env.prepared import prepare_faces
from mixup_env.transform import ChannelMask, FrequencyMasking


def _trajectory(env, steps=4):
    obs, _ = env.reset(seed=3)
    out = [obs]
    for i in range(steps):
        obs, reward, *_ = env.step(env.action_for_k(2 + i % 3))
        out += [obs, np.float64(reward)]
    return out


def test_an_env_on_prepared_faces_is_the_env_on_the_faces(tiny_env_kwargs):
    kw = {**tiny_env_kwargs, "episode_steps": 4}
    faces = load_faces("synthetic")
    masking = FrequencyMasking(ChannelMask(planes=faces.planes), get_recipe("tiny").upsample)
    prepared = prepare_faces(faces, masking, batch_size=16, storage="float16")
    direct = FrequencyMixupEnv(data=faces, **kw)
    assert torch.equal(prepared.train_x, direct.data.train_x) and np.array_equal(prepared.test_indices,
                                                                                 direct.test_indices)
    for a, b in zip(_trajectory(direct), _trajectory(FrequencyMixupEnv(data=prepared, **kw))):
        np.testing.assert_array_equal(a, b)
    # one preparation serves several envs, through gym.make too
    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", data=prepared, **kw)
    assert env.unwrapped.data is prepared and env.unwrapped.num_classes == 20


def test_the_env_takes_an_fr_config_and_refuses_one_that_cannot_read_its_faces(tiny_env_kwargs):
    env = FrequencyMixupEnv(**tiny_env_kwargs)
    wide = env.fr_config.__class__(**{**env.fr_config.__dict__, "embedding_dim": 48})
    other = FrequencyMixupEnv(fr_config=wide, **tiny_env_kwargs)
    other.reset(seed=0)
    assert other.trainer.config.embedding_dim == 48
    wrong = env.fr_config.__class__(**{**env.fr_config.__dict__, "in_channels": 64})
    with pytest.raises(ValueError, match=r"fr_config reads \(64, 8, 8\) inputs of 20 identities; the prepared faces "
                                         r"are \(54, 8, 8\) of 20"):
        FrequencyMixupEnv(fr_config=wrong, **tiny_env_kwargs)
    with pytest.raises(ValueError, match="batch_size=999 exceeds the 640 training images"):
        FrequencyMixupEnv(data=env.data, **{**tiny_env_kwargs, "batch_size": 999, "k_values": (2,)})
