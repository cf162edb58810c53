import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO

import mixup_env  # noqa: F401
from agents import MixingStatsCallback, make_ppo, save_agent
from fr_models import FRTrainer

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def test_ppo_runs_on_the_env_and_callback_collects_info(tiny_env_kwargs, tmp_path):
    env = gym.make("mixup_env/FrequencyMixup-v0", **tiny_env_kwargs)
    model = make_ppo(env, seed=0, n_steps=16, batch_size=16, n_epochs=2)
    cb = MixingStatsCallback()
    model.learn(total_timesteps=32, callback=cb)
    assert len(cb.history["k"]) == 32 and set(cb.history["k"]) <= {2.0, 3.0, 4.0, 5.0, 6.0}
    assert len(cb.rewards) == 32 and np.allclose(cb.rewards, cb.history["mixed_loss"])
    path = save_agent(model, tmp_path / "agent")
    assert path.name == "agent.zip" and path.is_file() and not list(tmp_path.glob(".*tmp*"))
    loaded = PPO.load(path)
    obs, _ = env.reset(seed=0)
    assert loaded.predict(obs, deterministic=True)[0] == model.predict(obs, deterministic=True)[0]


@pytest.mark.slow
def test_train_ppo_example_runs_and_saves(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "examples" / "train_ppo.py"), "--timesteps", "24", "--episode-steps", "8",
           "--batch-size", "16", "--out", str(out), "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    for key in ("steps_per_second", "final_episode_mean_k", "final_clean_accuracy", "mean_reward"):
        assert key in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timesteps"] == 24 and 2 <= summary["final_episode_mean_k"] <= 6
    assert (out / "ppo_agent.zip").is_file() and summary["agent"].endswith("ppo_agent.zip")
    trainer = FRTrainer.load(out / "fr_model.pt")
    assert trainer.updates == 8  # the final episode's FR run under the learned strategy


@pytest.mark.slow
def test_train_ppo_output_per_algorithm_and_rollout_rounding_said(tmp_path):
    from agents.training import parse_training_args, training_parser

    parser = lambda: training_parser("t", "ppo", "mixup_env/FrequencyMixup-v0", ("ppo", "a2c"))  # noqa: E731
    assert parse_training_args(parser(), ["--algo", "a2c"]).out == Path("runs/a2c")  # not the PPO run's folder
    assert parse_training_args(parser(), []).out == Path("runs/ppo")
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "examples" / "train_ppo.py"), "--timesteps", "25", "--n-envs", "2",
           "--episode-steps", "8", "--batch-size", "16", "--out", str(out), "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ppo collects rollouts of 24 env steps (n_steps x n_envs): --timesteps 25 runs 48 steps" in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timesteps_requested"] == 25 and summary["timesteps"] == 48


@pytest.mark.slow
def test_train_ppo_rejects_bad_arguments():
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "train_ppo.py"), "--episode-steps", "0"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert res.returncode == 2 and "--episode-steps and --n-envs >= 1" in res.stderr
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "train_ppo.py"), "--env-id", "mixup_env/Nope-v0"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert res.returncode == 2 and "invalid choice: 'mixup_env/Nope-v0'" in res.stderr


def test_reinforce_update_moves_policy_towards_higher_reward():
    """Toy bandit: reward = chosen k (larger is better). Updates must raise the probability of large k."""
    import torch

    from agents import Reinforce

    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", batch_size=16, episode_steps=4, recipe="tiny",
                   embedding_dim=32)
    agent = Reinforce(env, learning_rate=1e-2, seed=0, entropy_coef=0.0)
    obs = np.random.default_rng(0).random((40, env.observation_space.shape[0]), dtype=np.float32)
    k_values = np.asarray(env.unwrapped.k_values)

    def p_largest() -> float:
        with torch.no_grad():
            return float(torch.softmax(agent._logits(obs), -1)[..., -1].mean())

    before = p_largest()
    for t in range(60):
        o = obs[t % len(obs)]
        action, _ = agent.predict(o)
        agent.update(o, action, k_values[action].astype(float))  # per-sample reward: its k
    after = p_largest()
    assert after > before + 0.2, (before, after)
    # deterministic prediction now picks mostly the largest k
    action, _ = agent.predict(obs[0], deterministic=True)
    assert (action == len(k_values) - 1).mean() > 0.5


def test_reinforce_learns_a_feature_dependent_rule():
    """Reward prefers k=6 for samples whose first feature is high and k=2 otherwise: the policy must follow."""
    from agents import Reinforce
    from mixup_env import split_observation

    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", batch_size=16, episode_steps=4, recipe="tiny",
                   embedding_dim=32)
    agent = Reinforce(env, seed=1)
    rng = np.random.default_rng(1)
    for _ in range(400):
        o = rng.random(env.observation_space.shape[0], dtype=np.float32)
        high = split_observation(o)[1][:, 0] > 0.5
        action, _ = agent.predict(o)
        reward = np.where(high, action == 4, action == 0).astype(float)
        agent.update(o, action, reward)
    o = rng.random(env.observation_space.shape[0], dtype=np.float32)
    high = split_observation(o)[1][:, 0] > 0.5
    action, _ = agent.predict(o, deterministic=True)
    assert (action[high] == 4).mean() > 0.7 and (action[~high] == 0).mean() > 0.7


def test_reinforce_skips_fault_steps_and_starts_from_no_advantage():
    """A fault step's per-sample rewards are NaN: nothing is learned from them (the weights stayed finite before
    only by luck; they went NaN and predict raised). The first scalar reward has nothing to compare with."""
    import torch

    from agents import Reinforce

    class NaNEveryOtherStep(gym.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.t = 0

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.t += 1
            if self.t % 2:
                info = {**info, "mixed_loss_per_sample": np.full_like(info["mixed_loss_per_sample"], np.nan)}
            return obs, reward, terminated, truncated, info

    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", batch_size=16, episode_steps=5, recipe="tiny",
                   embedding_dim=32)
    agent = Reinforce(NaNEveryOtherStep(env), seed=0, per_sample_reward=True).learn(6, seed=0)
    assert agent.updates == 3 and agent.num_timesteps == 6
    assert all(torch.isfinite(p).all() for p in agent.policy.parameters())
    obs, _ = env.reset(seed=1)
    assert env.action_space.contains(agent.predict(obs)[0])
    before = [p.detach().clone() for p in agent.policy.parameters()]
    out = agent.update(obs, agent.predict(obs)[0], np.full(16, np.nan))
    assert out["skipped"] == 1.0 and agent.updates == 3
    assert all(torch.equal(p, q) for p, q in zip(agent.policy.parameters(), before))

    batch_env = gym.make("mixup_env/FrequencyMixup-v0", batch_size=16, episode_steps=5, recipe="tiny")
    scalar = Reinforce(batch_env, seed=0, entropy_coef=0.0)
    obs, _ = batch_env.reset(seed=0)
    before = [p.detach().clone() for p in scalar.policy.parameters()]
    out = scalar.update(obs, scalar.predict(obs)[0], 7.5)
    assert out["advantage"] == 0.0 and out["skipped"] == 0.0 and scalar.reward_mean == 7.5
    assert all(torch.equal(p, q) for p, q in zip(scalar.policy.parameters(), before))  # no gradient from it
    assert scalar.update(obs, scalar.predict(obs)[0], 8.5)["advantage"] > 0.5  # above the baseline


def test_reinforce_learn_on_env_save_load_and_bad_env(tmp_path):
    from agents import Reinforce

    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", batch_size=16, episode_steps=5, recipe="tiny",
                   embedding_dim=32)
    seen = []
    agent = Reinforce(env, seed=0, per_sample_reward=True).learn(12, seed=0, on_step=seen.append)
    assert agent.updates == 12 and len(seen) == 12 and agent.num_timesteps == 12
    path = agent.save(tmp_path / "reinforce.pt")
    loaded = Reinforce.load(path, env)
    obs, _ = env.reset(seed=3)
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])
    batch_env = gym.make("mixup_env/FrequencyMixup-v0", batch_size=16, episode_steps=5, recipe="tiny")
    action, _ = Reinforce(batch_env, seed=0).predict(batch_env.reset(seed=0)[0])
    assert batch_env.action_space.contains(action)
    with pytest.raises(ValueError, match="discrete action mode"):
        Reinforce(gym.make("mixup_env/FrequencyMixupContinuous-v0", batch_size=16))


@pytest.mark.parametrize("env_id", ["mixup_env/FrequencyMixup-v0", "mixup_env/FrequencyMixupPerSampleContinuous-v0"])
def test_baselines_predict_valid_actions(env_id):
    from agents import FixedK, RandomK, ScheduleK

    env = gym.make(env_id, batch_size=16, episode_steps=4, recipe="tiny", embedding_dim=32)
    obs, _ = env.reset(seed=0)
    for agent in (FixedK(env, 3), RandomK(env, seed=0), ScheduleK(env)):
        action, state = agent.predict(obs)
        assert state is None and env.action_space.contains(action)
        batched, _ = agent.predict(np.stack([obs, obs]))
        assert len(batched) == 2
    _, _, _, _, info = env.step(FixedK(env, 3).predict(obs)[0])
    assert info["k"] == 3
    sched = ScheduleK(env, 2, 6)
    obs_late = obs.copy()
    obs_late[0] = 1.0
    assert sched.choose_k(obs) == 2 and sched.choose_k(obs_late) == 6
    obs_late[0] = 0.5
    assert sched.choose_k(obs_late) == 4
    with pytest.raises(ValueError, match="k=7 is not one of the env's k_values"):
        FixedK(env, 7)


def test_reinforce_rollouts_have_returns_and_a_baseline_valid_from_the_first_update(tmp_path):
    """Batched rollouts: the first update already moves towards the better action (its own mean return is the
    baseline), returns discount later rewards, and the agent finds a known optimum on the env."""
    import torch

    from agents import Reinforce

    env = gym.make("mixup_env/FrequencyMixup-v0", batch_size=16, episode_steps=40, recipe="tiny")
    agent = Reinforce(env, seed=0, rollout=8, gamma=0.5, entropy_coef=0.0)
    o = np.full(env.observation_space.shape[0], 0.5, dtype=np.float32)
    before = torch.softmax(agent._logits(o)[0, 0], -1).detach()
    # action 1 paid 1, action 3 paid 0: one update, no warm-up, must favour action 1
    out = agent.update_rollout([o] * 4, [1, 3, 1, 3], [1.0, 0.0, 1.0, 0.0], [False] * 4)
    after = torch.softmax(agent._logits(o)[0, 0], -1).detach()
    assert out["skipped"] == 0.0 and abs(out["advantage"]) < 1e-6
    assert after[1] > before[1] and after[3] < before[3]
    # returns: G_t = r_t + 0.5 G_{t+1}, cut at an episode's end: [1 + 0.5 * 2, 2, 4] -> mean 8 / 3
    assert agent.update_rollout([o] * 3, [0, 0, 0], [1.0, 2.0, 4.0], [False, True, False])["return"] == \
        pytest.approx((2.0 + 2.0 + 4.0) / 3)
    assert agent.update_rollout([o], [0], [float("nan")], [False])["skipped"] == 1.0
    with pytest.raises(ValueError, match="rollout=0 must be >= 1 and gamma=2"):
        Reinforce(env, rollout=0, gamma=2)

    def near_four(record):  # a known optimum: always k = 4 (action 2)
        return -abs(record.k_mean - 4.0)

    env = gym.make("mixup_env/FrequencyMixup-v0", batch_size=16, episode_steps=40, recipe="tiny", reward=near_four)
    agent = Reinforce(env, seed=0, rollout=8, learning_rate=3e-2).learn(240, seed=0)
    obs, _ = env.reset(seed=5)
    assert agent.predict(obs, deterministic=True)[0] == 2
    back = Reinforce.load(agent.save(tmp_path / "rollout_agent.pt"), env)
    assert (back.rollout, back.gamma) == (8, 0.0)


def test_training_spec_dither_reaches_the_env_and_needs_a_continuous_id():
    from agents.training import TrainingSpec

    spec = TrainingSpec(algo="sac", env_id="mixup_env/FrequencyMixupPerSampleContinuous-v0", dither=True)
    assert spec.env_kwargs()["continuous_rounding"] == "dither"
    assert "continuous_rounding" not in TrainingSpec().env_kwargs()
    with pytest.raises(ValueError, match="--dither needs a continuous env id, got mixup_env/FrequencyMixup-v0"):
        TrainingSpec(dither=True)
