"""agents.per_sample: one network shared across the batch's samples, for SB3's PPO / A2C."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO, SAC

import mixup_env  # noqa: F401  registers the envs
from agents.per_sample import PerSamplePolicy, PerSampleSACPolicy
from agents.sb3 import make_agent
from mixup_env.envs.frequency_mixup import GLOBAL_FEATURES, SAMPLE_FEATURES

G, F = len(GLOBAL_FEATURES), len(SAMPLE_FEATURES)


def _outputs(policy, obs: torch.Tensor) -> torch.Tensor:
    """``(B, N, K)`` per-sample logits, or ``(B, N)`` Gaussian means (read at once: SB3 reuses the object)."""
    d = policy.get_distribution(obs).distribution
    return torch.stack([c.logits for c in d], 1) if isinstance(d, list) else d.mean.clone()


@pytest.mark.parametrize("env_id", ["mixup_env/FrequencyMixupPerSample-v0",
                                    "mixup_env/FrequencyMixupPerSampleContinuous-v0"])
def test_the_same_features_give_the_same_action_at_any_position(env_id):
    env = gym.make(env_id, batch_size=8, episode_steps=4, recipe="tiny")
    model = PPO(PerSamplePolicy, env, n_steps=4, batch_size=4, seed=0)
    with torch.no_grad():
        for p in model.policy.action_net.parameters():  # away from the tiny initial gain, so differences show
            p.normal_()
    obs = torch.rand(3, env.observation_space.shape[0], generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    samples = obs[:, G:].view(3, 8, F)
    permuted = torch.cat([obs[:, :G], samples[:, perm].flatten(1)], 1)
    with torch.no_grad():
        a, b = _outputs(model.policy, obs), _outputs(model.policy, permuted)
        assert a.std() > 0.1  # the outputs do depend on the features ...
        torch.testing.assert_close(b, a[:, perm])  # ... and follow the samples, not the positions
        twin = obs.clone()
        twin[:, G + 5 * F : G + 6 * F] = twin[:, G : G + F]  # sample 5 made identical to sample 0
        t = _outputs(model.policy, twin)
        torch.testing.assert_close(t[:, 5], t[:, 0])
        v1, v2 = model.policy.predict_values(obs), model.policy.predict_values(permuted)
        torch.testing.assert_close(v1, v2)  # the value reads the samples as a set
    n_params = sum(p.numel() for p in model.policy.parameters())
    wide = gym.make(env_id, batch_size=32, episode_steps=4, recipe="tiny")
    assert sum(p.numel() for p in PPO(PerSamplePolicy, wide, n_steps=4, batch_size=4).policy.parameters()) == n_params
    model.learn(8)  # trains


class _Threshold(gym.Env):
    """A per-sample task with a known optimum: each sample's best action is 1 if its first feature > 0.5, else 0;
    the reward is the share of samples answered right (the optimum: 1 at every step)."""

    def __init__(self, n: int = 8) -> None:
        self.n = n
        self.observation_space = spaces.Box(0, 1, (G + n * F,), np.float32)
        self.action_space = spaces.MultiDiscrete([2] * n)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._obs = self.np_random.random(self.observation_space.shape).astype(np.float32)
        return self._obs, {}

    def _right(self, action, high):
        """Which samples the action answered right (``high``: first feature > 0.5)."""
        return np.asarray(action) == high.astype(int)

    def step(self, action):
        high = self._obs[G:].reshape(self.n, F)[:, 0] > 0.5
        reward = float(self._right(action, high).mean())
        self._obs = self.np_random.random(self.observation_space.shape).astype(np.float32)
        return self._obs, reward, False, False, {}


@pytest.mark.slow
def test_ppo_with_the_shared_policy_learns_a_per_sample_rule():
    torch.set_num_threads(1)
    env = gym.wrappers.TimeLimit(_Threshold(), 16)
    model = PPO(PerSamplePolicy, env, n_steps=128, batch_size=64, learning_rate=3e-3, gamma=0.0, seed=0)
    model.learn(6000)
    obs, _ = env.reset(seed=123)
    scores = []
    for _ in range(200):
        action, _ = model.predict(obs, deterministic=True)
        obs, r, _, trunc, _ = env.step(action)
        scores.append(r)
        if trunc:
            obs, _ = env.reset()
    assert np.mean(scores) > 0.9  # chance: 0.5


def test_bad_spaces_are_refused():
    lr = lambda _: 1e-3  # noqa: E731
    obs = spaces.Box(0, 1, (G + 4 * F,), np.float32)
    with pytest.raises(ValueError, match=r"needs MultiDiscrete\(\[K\] \* 4\)"):
        PerSamplePolicy(obs, spaces.MultiDiscrete([5] * 3), lr)
    with pytest.raises(ValueError, match="control_alpha's second block is not supported"):
        PerSamplePolicy(obs, spaces.Box(-1, 1, (8,)), lr)
    with pytest.raises(ValueError, match=r"per-sample observations \(6 \+ N\*6 entries\)"):
        PerSamplePolicy(spaces.Box(0, 1, (7,)), spaces.Discrete(5), lr)
    with pytest.raises(ValueError, match="per-sample MultiDiscrete or Box actions"):
        PerSamplePolicy(obs, spaces.Discrete(5), lr)

    with pytest.raises(ValueError, match=r"PerSampleSACPolicy needs Box actions of shape \(4,\)"):
        PerSampleSACPolicy(obs, spaces.Box(-1, 1, (8,)), lr)
    with pytest.raises(ValueError, match="does not support gSDE"):
        PerSampleSACPolicy(obs, spaces.Box(-1, 1, (4,)), lr, use_sde=True)


def test_sac_s_shared_actor_and_critics_follow_the_samples():
    env = gym.make("mixup_env/FrequencyMixupPerSampleContinuous-v0", batch_size=8, episode_steps=4, recipe="tiny",
                   continuous_rounding="dither")
    model = SAC(PerSampleSACPolicy, env, learning_starts=2, batch_size=4, seed=0)
    actor, critic = model.policy.actor, model.policy.critic
    obs = torch.rand(3, env.observation_space.shape[0], generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    permuted = torch.cat([obs[:, :G], obs[:, G:].view(3, 8, F)[:, perm].flatten(1)], 1)
    with torch.no_grad():
        mean, log_std, _ = actor.get_action_dist_params(obs)
        mean_p, log_std_p, _ = actor.get_action_dist_params(permuted)
        assert mean.shape == (3, 8) and mean.std() > 0
        torch.testing.assert_close(mean_p, mean[:, perm])
        torch.testing.assert_close(log_std_p, log_std[:, perm])
        actions = torch.rand(3, 8) * 2 - 1
        q, q_p = critic(obs, actions), critic(permuted, actions[:, perm])
        assert len(q) == 2 and q[0].shape == (3, 1)
        for a, b in zip(q, q_p):
            torch.testing.assert_close(a, b)  # Q reads (sample, action) pairs as a set
        assert not torch.allclose(critic(obs, -actions)[0], q[0])  # ... and does read the actions
    target = model.policy.critic_target
    assert all(torch.equal(p, t) for p, t in zip(critic.parameters(), target.parameters()))
    n_params = sum(p.numel() for p in model.policy.parameters())
    wide = gym.make("mixup_env/FrequencyMixupPerSampleContinuous-v0", batch_size=32, episode_steps=4, recipe="tiny")
    assert sum(p.numel() for p in SAC(PerSampleSACPolicy, wide).policy.parameters()) == n_params
    model.learn(6)  # trains through SB3's own loop


class _Sign(_Threshold):
    """:class:`_Threshold` with ``Box(-1, 1, (n,))`` actions: a sample is answered right when its action's sign is
    + for a first feature > 0.5, - otherwise."""

    def __init__(self, n: int = 8) -> None:
        super().__init__(n)
        self.action_space = spaces.Box(-1, 1, (n,), np.float32)

    def _right(self, action, high):
        return np.sign(action) == np.where(high, 1.0, -1.0)


@pytest.mark.slow
def test_sac_with_the_shared_policy_learns_a_per_sample_rule():
    torch.set_num_threads(1)
    env = gym.wrappers.TimeLimit(_Sign(), 16)
    model = SAC(PerSampleSACPolicy, env, learning_starts=100, batch_size=64, gamma=0.0, learning_rate=3e-3, seed=0)
    model.learn(1500)
    obs, _ = env.reset(seed=123)
    scores = []
    for _ in range(100):
        action, _ = model.predict(obs, deterministic=True)
        obs, r, _, trunc, _ = env.step(action)
        scores.append(r)
        if trunc:
            obs, _ = env.reset()
    assert np.mean(scores) > 0.9  # chance: 0.5 (measured 0.97)


@pytest.mark.slow
def test_sac_leaves_the_midpoint_on_the_env_when_the_reward_wants_a_small_k():
    """The grid's SAC sat at the midpoint (k = 4 for every face). On the env with dithered rounding (the expected k
    follows the action) and a reward that falls with each sample's k, the shared SAC's deterministic choice leaves
    it for k = 2 (with SB3's initial entropy coefficient 1.0 it reached only -0.15 in as many steps)."""
    torch.set_num_threads(1)
    env = gym.make("mixup_env/FrequencyMixupPerSampleContinuous-v0", batch_size=8, episode_steps=50, eval_every=50,
                   recipe="tiny", continuous_rounding="dither", reward=lambda rec: float(np.mean(6 - rec.k)) / 4)
    model = make_agent("sac", env, seed=0, policy="per_sample", learning_starts=50, batch_size=64, gamma=0.0,
                       learning_rate=3e-3)  # the library's SAC defaults (ent_coef="auto_0.05")
    assert isinstance(model.policy, PerSampleSACPolicy)
    model.learn(600)
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    _, _, _, _, info = env.step(action)
    assert np.mean(action) < -0.6 and np.mean(info["k_per_sample"]) < 3  # measured -0.84; the midpoint: 0, k = 4
