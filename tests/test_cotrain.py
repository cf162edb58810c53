"""agents.cotrain: the strategy and the FR network trained together over one FR run, the final model kept."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import mixup_env  # noqa: F401  registers the envs
from agents import Reinforce, make_agent
from agents.cotrain import cotrain

TINY = {"batch_size": 16, "episode_steps": 8, "eval_every": 4, "recipe": "tiny"}


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_cotraining_updates_both_networks_and_keeps_the_final_fr_model(algo):
    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", **TINY)
    built = {}

    def make(e):
        agent = Reinforce(e, seed=0) if algo == "reinforce" else make_agent("ppo", e, seed=0, n_steps=4, batch_size=4)
        built["before"] = _params(agent.policy)
        return agent

    result = cotrain(make, env, seed=0)
    after = _params(result.agent.policy)
    assert any(not torch.equal(a, b) for a, b in zip(built["before"], after))  # the strategy learned ...
    assert result.trainer.updates == TINY["episode_steps"] == result.steps  # ... over the whole FR run ...
    fresh = env.unwrapped.trainer  # ... and the env has been reset since: a new FR model, not the co-trained one
    assert result.trainer is not fresh
    assert result.trainer.updates > fresh.updates
    assert sum(result.k_distribution.values()) == pytest.approx(1.0)
    assert set(result.k_distribution) <= {"2", "3", "4", "5", "6"}
    assert result.exposure["faces_mixed"] > 0
    assert 0 <= result.accuracy <= 1 and result.episode_return > 0  # fr_loss: the run's summed mixed losses


def test_cotrain_refuses_what_is_not_a_mixup_env_or_never_ends_its_episode():
    with pytest.raises(ValueError, match="cotrain needs a mixup_env env, got CartPoleEnv"):
        cotrain(lambda e: None, gym.make("CartPole-v1"))

    class Idle:
        def learn(self, total_timesteps, seed=None, progress_bar=False):
            return self

    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", **TINY)
    with pytest.raises(ValueError, match="stepped the env 0 times without ending its episode of 8 FR updates"):
        cotrain(lambda e: Idle(), env)
