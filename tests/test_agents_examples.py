import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import mixup_env  # noqa: F401
from agents import MixingStatsCallback, make_ppo, save_agent
from fr_models import FRTrainer

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def test_ppo_learns_on_the_env_and_callback_collects_info(tiny_env_kwargs, tmp_path):
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
    assert (out / "ppo_agent.zip").is_file()
    trainer = FRTrainer.load(out / "fr_model.pt")
    assert trainer.updates == 8  # the final episode's FR run under the learned strategy


def test_train_ppo_rejects_bad_arguments():
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "train_ppo.py"), "--timesteps", "0"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert res.returncode == 2 and "--timesteps and --episode-steps must be positive" in res.stderr
