"""SB3 on every action mode, vector envs, VecNormalize, tensorboard logging, and the comparison/inspection tools."""

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

import mixup_env  # noqa: F401
from agents import (
    MixingStatsCallback,
    RandomK,
    format_k_by_feature,
    k_by_feature,
    load_vec_normalize,
    make_agent,
    make_vec_env,
    save_agent,
)
from fr_models import CheckpointError
from agents.compare import compare_agents, format_comparison, plot_comparison

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
TINY = {"batch_size": 16, "episode_steps": 10, "recipe": "tiny"}


@pytest.mark.parametrize("algo,env_id,extra", [
    ("ppo", "mixup_env/FrequencyMixupPerSample-v0", {"n_steps": 16, "batch_size": 16}),
    ("a2c", "mixup_env/FrequencyMixup-v0", {"n_steps": 8}),
    ("a2c", "mixup_env/FrequencyMixupPerSampleContinuous-v0", {"n_steps": 8}),
    ("sac", "mixup_env/FrequencyMixupContinuous-v0", {"learning_starts": 8, "batch_size": 8}),
    ("sac", "mixup_env/FrequencyMixupPerSampleContinuous-v0", {"learning_starts": 8, "batch_size": 8}),
])
def test_sb3_algorithms_train_on_their_action_modes(algo, env_id, extra):
    env = gym.make(env_id, **TINY)
    model = make_agent(algo, env, seed=0, **extra)
    cb = MixingStatsCallback()
    model.learn(24, callback=cb)
    assert model.num_timesteps >= 24 and len(cb.history["k"]) == model.num_timesteps
    assert all(2 <= k <= 6 for k in cb.history["k"])
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(model.predict(obs, deterministic=True)[0])


def test_bad_agent_and_vec_env_arguments():
    with pytest.raises(ValueError, match="SAC needs a continuous.*FrequencyMixupContinuous-v0"):
        make_agent("sac", gym.make("mixup_env/FrequencyMixup-v0", **TINY))
    with pytest.raises(ValueError, match="unknown algorithm 'dqn'; accepted: ppo, a2c, sac"):
        make_agent("dqn", gym.make("mixup_env/FrequencyMixup-v0", **TINY))
    with pytest.raises(ValueError, match="n_envs=0 is invalid: accepted an integer >= 1"):
        make_vec_env("mixup_env/FrequencyMixup-v0", n_envs=0)
    with pytest.raises(ValueError, match="unknown vec_env 'threads'; accepted: dummy, subproc"):
        make_vec_env("mixup_env/FrequencyMixup-v0", n_envs=2, vec_env="threads")


def test_dummy_vec_env_with_normalize_and_atomic_save(tmp_path):
    venv = make_vec_env("mixup_env/FrequencyMixup-v0", n_envs=2, seed=3, env_kwargs=TINY, normalize=True, gamma=0.9)
    assert isinstance(venv, VecNormalize) and isinstance(venv.venv, DummyVecEnv) and venv.num_envs == 2
    model = make_agent("ppo", venv, seed=0, n_steps=8, batch_size=16)
    cb = MixingStatsCallback()
    model.learn(16, callback=cb)
    # the callback records the env's own rewards, not the normalised ones
    assert np.allclose(cb.rewards, cb.history["mixed_loss"])
    path = save_agent(model, tmp_path / "agent.zip")
    stats = tmp_path / "agent.vecnormalize.pt"
    assert path.is_file() and stats.is_file() and not list(tmp_path.glob(".*"))
    loaded = load_vec_normalize(stats, make_vec_env("mixup_env/FrequencyMixup-v0", 2, 3, TINY))
    for a, b in ((loaded.obs_rms, venv.obs_rms), (loaded.ret_rms, venv.ret_rms)):
        assert np.array_equal(a.mean, b.mean) and np.array_equal(a.var, b.var) and a.count == b.count
    assert (loaded.gamma, loaded.clip_obs, loaded.norm_reward) == (0.9, venv.clip_obs, True)
    # statistics of another observation size are refused, and so is SB3's pickle format (it could run code)
    with pytest.raises(ValueError, match="saved for another env configuration"):
        load_vec_normalize(stats, make_vec_env("mixup_env/FrequencyMixup-v0", 2, 3, {**TINY, "batch_size": 8}))
    venv.save(str(tmp_path / "sb3.pkl"))
    with pytest.raises(CheckpointError, match="is not a readable VecNormalize statistics file"):
        load_vec_normalize(tmp_path / "sb3.pkl", make_vec_env("mixup_env/FrequencyMixup-v0", 2, 3, TINY))
    venv.close()


def test_subproc_vec_env_two_workers():
    venv = make_vec_env("mixup_env/FrequencyMixupPerSample-v0", n_envs=2, seed=0, env_kwargs=TINY, vec_env="subproc")
    try:
        assert isinstance(venv, SubprocVecEnv)
        model = make_agent("ppo", venv, seed=0, n_steps=4, batch_size=8)
        cb = MixingStatsCallback()
        model.learn(8, callback=cb)
        assert model.num_timesteps == 8 and len(cb.history["k"]) == 8
        obs = venv.reset()
        assert obs.shape == (2, 6 + 16 * 6)
        # the two workers were seeded differently: their first observations differ
        assert not np.array_equal(obs[0], obs[1])
    finally:
        venv.close()


def test_tensorboard_logs_privacy_utility_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = gym.make("mixup_env/FrequencyMixup-v0", **TINY)
    model = make_agent("ppo", env, seed=0, n_steps=8, batch_size=8, tensorboard_log=str(tmp_path))
    model.learn(16, callback=MixingStatsCallback())
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"mixup/k", "mixup/mixed_loss", "mixup/clean_loss", "mixup/accuracy", "mixup/reward"} <= tags
    assert all(2 <= e.value <= 6 for e in acc.Scalars("mixup/k"))


@pytest.mark.slow
def test_train_scripts_with_load_normalize_and_continuous(tmp_path):
    run = [sys.executable, str(ROOT / "examples" / "train_sac.py"), "--timesteps", "16", "--episode-steps", "8",
           "--batch-size", "16", "--no-progress", "--out", str(tmp_path / "sac"), "--control-alpha",
           "--env-id", "mixup_env/FrequencyMixupPerSampleContinuous-v0"]
    res = subprocess.run(run, capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "sac" / "sac_agent.zip").is_file() and (tmp_path / "sac" / "fr_model.pt").is_file()
    base = [sys.executable, str(ROOT / "examples" / "train_ppo.py"), "--episode-steps", "8", "--batch-size", "16",
            "--no-progress", "--algo", "a2c", "--normalize", "--n-envs", "2"]
    res = subprocess.run(base + ["--timesteps", "32", "--out", str(tmp_path / "a2c")], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "a2c" / "a2c_agent.vecnormalize.pt").is_file()
    res = subprocess.run(base + ["--timesteps", "0", "--load", str(tmp_path / "a2c" / "a2c_agent.zip"),
                                 "--out", str(tmp_path / "a2c_eval")], capture_output=True, text=True, timeout=300,
                         cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "final_clean_accuracy" in res.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "examples" / "train_sac.py"), "--env-id",
                          "mixup_env/FrequencyMixup-v0"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert bad.returncode == 2 and "SAC needs a continuous env id" in bad.stderr
    bad = subprocess.run([sys.executable, str(ROOT / "examples" / "train_ppo.py"), "--n-envs", "0"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert bad.returncode == 2 and "--n-envs" in bad.stderr


@pytest.mark.slow
def test_custom_reward_example_trains():
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_reward.py"), "--timesteps", "64",
                          "--no-progress"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "training PPO for 64 env steps on the reward priced_mixing (price 0.1)" in res.stdout
    assert "mean k: first 20% of training" in res.stdout


@pytest.mark.slow
def test_compare_agents_small(tmp_path):
    result = compare_agents("mixup_env/FrequencyMixupPerSample-v0", {**TINY, "reward": "utility_aware"}, seeds=[0, 1],
                            train_steps=16, progress=False)
    expected = {"fixed_k=2", "fixed_k=6", "random_k", "schedule_k", "reinforce", "ppo"}
    assert expected <= set(result.rows)
    assert all(len(row["reward"]) == 2 for row in result.rows.values())
    assert result.rows["fixed_k=3"]["k"] == [3.0, 3.0]
    text = format_comparison(result)
    assert "best fixed k: fixed_k=" in text and "reinforce" in text and "random_k" in text
    png = plot_comparison(result, tmp_path / "c.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_k_by_feature_reports_the_policy():
    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", **TINY)
    table = k_by_feature(RandomK(env, seed=0), env, steps=12, bins=3)
    assert set(table) == {"loss", "confidence", "margin", "class_frequency", "exposure_max", "exposure_mean"}
    loss = table["loss"]
    assert loss["counts"].sum() == 12 * 16 and loss["counts"].shape[1] == 5
    assert abs(loss["correlation"]) < 0.3  # random k does not depend on the features
    text = format_k_by_feature(table)
    assert "loss (correlation with k:" in text and "k=6" in text


@pytest.mark.slow
def test_inspect_policy_example_reports_k_by_feature(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "inspect_policy.py"), "--train-steps", "12",
                          "--steps", "6", "--episode-steps", "8", "--batch-size", "16", "--bins", "2",
                          "--save", str(tmp_path / "r.pt")], capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    for feature in ("loss", "confidence", "margin", "class_frequency"):
        assert f"{feature} (correlation with k:" in res.stdout
    assert (tmp_path / "r.pt").is_file()
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "inspect_policy.py"), "--load", str(tmp_path / "r.pt"),
                          "--steps", "4", "--episode-steps", "8", "--batch-size", "16"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]


def test_comparison_verdicts():
    from agents.compare import ComparisonResult

    r = ComparisonResult(seeds=[0, 1])
    for name, rewards in {"fixed_k=2": [1.0, 1.0], "fixed_k=3": [2.0, 2.0], "random_k": [1.5, 1.5],
                          "reinforce": [2.0, 2.0], "ppo": [2.5, 1.0]}.items():
        for rw in rewards:
            r.add(name, rw, 0.5, 3.0)
    assert r.best_fixed() == "fixed_k=3"
    v = r.verdicts()
    assert v[0].startswith("reinforce beats random_k: reward difference +0.5000")
    assert v[1].startswith("reinforce equals fixed_k=3")
    assert v[2].startswith("ppo is mixed against random_k") and "wins 1/2" in v[2]
    assert v[3].startswith("ppo is mixed against fixed_k=3")


def test_comparison_verdicts_for_any_algorithm_and_without_fixed_agents(tmp_path):
    import matplotlib

    from agents.compare import ComparisonResult, format_comparison, plot_comparison

    r = ComparisonResult(seeds=[0, 1])
    for name, rewards in {"random_k": [1.5, 1.5], "schedule_k": [1.0, 1.0], "a2c": [2.0, 1.0]}.items():
        for rw in rewards:
            r.add(name, rw, 0.5, 3.0)
    assert r.best_fixed() is None and r.learners() == ["a2c"]
    assert r.verdicts() == ["a2c is mixed against random_k: reward difference +0.0000 (per seed: +0.5000, -0.5000; "
                            "wins 1/2)"]
    text = format_comparison(r)
    assert "best fixed k: none run" in text and "a2c is mixed against random_k" in text
    backend = matplotlib.get_backend()
    assert plot_comparison(r, tmp_path / "c.png").stat().st_size > 1000
    assert matplotlib.get_backend() == backend  # the program's backend is not switched


def test_readme_python_snippet_runs_and_prints(capsys):
    """The README's first Python block, shortened (fewer steps), runs and says what it trained."""
    text = (ROOT / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "total_timesteps=4000" in code and "episode_steps=200" in code
    code = code.replace("total_timesteps=4000", "total_timesteps=16").replace("episode_steps=200", "episode_steps=8")
    code = code.replace("n_steps=64", "n_steps=8, batch_size=8").replace("progress_bar=True", "progress_bar=False")
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "mean k " in out and "final clean accuracy " in out
