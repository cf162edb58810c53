"""The plain FR training loop and examples/train_fr.py under every defence."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fr_models import FRConfig, FRTrainer
from fr_models.training import fit

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def test_fit_trains_mixes_flips_and_rejects_bad_sizes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, 2, 2, generator=g)
    y = torch.arange(40) % 4
    x = x + 3 * torch.nn.functional.one_hot(y, 6).float().view(40, 6, 1, 1)  # learnable
    t = FRTrainer(FRConfig(6, (2, 2), 4, embedding_dim=8, widths=(8, 8)), seed=0)
    calls = {"mix": 0, "flip": 0}

    def mix(xb, yb, gen):
        calls["mix"] += 1
        return xb, torch.nn.functional.one_hot(yb, 4).float()

    def flip(xb):
        calls["flip"] += 1
        return xb.flip(-1)

    hist = fit(t, x, y, epochs=3, batch_size=16, mix=mix, flip=flip)
    assert hist["updates"] == 6 and calls == {"mix": 6, "flip": 6}  # 2 full batches per epoch
    assert len(hist["epoch_seconds"]) == 3 and hist["epoch_losses"][-1] < hist["epoch_losses"][0]
    with pytest.raises(ValueError, match="batch_size <= 40"):
        fit(t, x, y, epochs=1, batch_size=64)


def run(args, tmp_path, name):
    out = tmp_path / name
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "train_fr.py"), "--epochs", "2", "--batch-size", "32",
                          "--no-progress", "--out", str(out), *args], capture_output=True, text=True, timeout=300,
                         cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads((out / "metrics.json").read_text()), out


@pytest.mark.parametrize("defence,extra", [("none", []), ("dct", []), ("mask", ["--hflip"]), ("fixed", ["--k", "4"]),
                                           ("random", ["--backbone", "unblock"])])
def test_train_fr_defences(tmp_path, defence, extra):
    m, out = run(["--defence", defence, *extra], tmp_path, defence)
    assert m["defence"] == defence and m["backbone"] == ("unblock" if defence == "random" else "resnet")
    assert m["recipe"]["upsample"] == {"none": None, "random": 1}.get(defence, 2)  # "small" recipe; unblock: 1
    chance = m["chance"]
    assert chance["uniform"] == pytest.approx(1 / 20) and chance["majority_class"] == pytest.approx(1 / 20)
    assert 0.0 <= m["identification"]["balanced"] <= 1.0
    assert 0.0 <= m["identification"]["top1"] <= m["identification"]["top5"] <= 1.0
    assert m["seconds_per_epoch"] > 0 and m["train_images"] + m["test_images"] == 800
    split = np.load(out / "split.npz")
    assert len(np.intersect1d(split["train_idx"], split["test_idx"])) == 0
    model = FRTrainer.load(out / "fr_model.pt")
    assert model.config.backbone == m["backbone"]
    kept = {"none": 1, "dct": 64}.get(defence, 54)  # pixels; all 64 DCT channels; the default mask drops 10
    assert model.config.in_channels == kept and model.metadata["defence"] == defence


def test_train_fr_with_a_saved_policy(tmp_path):
    import gymnasium as gym

    import mixup_env  # noqa: F401
    from agents import Reinforce

    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", batch_size=32, episode_steps=4)
    policy = Reinforce(env, seed=0).learn(4, seed=0).save(tmp_path / "policy.pt")
    m, _ = run(["--defence", "policy", "--policy", str(policy)], tmp_path, "policy")
    assert m["defence"] == "policy" and 0 <= m["identification"]["top1"] <= 1


def test_train_fr_bad_arguments(tmp_path):
    for args, msg in ((["--defence", "policy"], "needs --policy"),
                      (["--defence", "none", "--backbone", "grid"], "pixel backbone goes with --defence none")):
        res = subprocess.run([sys.executable, str(ROOT / "examples" / "train_fr.py"), *args], capture_output=True,
                             text=True, timeout=120, cwd=ROOT, env=ENV)
        assert res.returncode == 2 and msg in res.stderr


def test_train_fr_runs_an_sb3_policy_with_its_observation_statistics(tmp_path):
    """A policy trained with --normalize saw normalised observations: train_fr.py must give it the same."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    import mixup_env  # noqa: F401
    from agents import load_obs_normalizer, make_agent, save_agent

    make = lambda: gym.make("mixup_env/FrequencyMixupPerSample-v0", batch_size=32, episode_steps=4)  # noqa: E731
    vec = VecNormalize(DummyVecEnv([make]), norm_reward=False)
    shape = vec.observation_space.shape
    vec.obs_rms.mean, vec.obs_rms.var = np.full(shape, 2.0), np.full(shape, 4.0)
    path = save_agent(make_agent("ppo", vec, seed=0), tmp_path / "ppo_agent.zip")
    env = make()
    normalize = load_obs_normalizer(path, env)
    obs = env.observation_space.sample()
    np.testing.assert_allclose(normalize(obs), np.clip((obs - 2.0) / np.sqrt(4.0 + 1e-8), -10, 10), rtol=1e-6)
    assert load_obs_normalizer(tmp_path / "plain.zip", env) is None  # no statistics saved beside it
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "train_fr.py"), "--epochs", "1", "--batch-size", "32",
                          "--no-progress", "--out", str(tmp_path / "fr"), "--defence", "policy", "--policy", str(path),
                          "--policy-algo", "ppo"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "observations normalised by its saved VecNormalize statistics" in res.stdout
