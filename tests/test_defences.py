"""privacy.defences: the defence specs, negative label smoothing, and train_fr_model under every defence (what it
trains, writes and records)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fr_models import FRTrainer
from fr_models.data import load_faces
from fr_models.recipes import get_recipe
from privacy.defences import DefenceSpec, PolicySpec, negative_smoothing, train_fr_model

#: the synthetic faces' recipe, short
SMALL = get_recipe("small").replace(epochs=2, batch_size=32)


def test_negative_smoothing_ramps_to_its_final_value_and_keeps_rows_summing_to_one():
    smooth = negative_smoothing(-0.1, num_classes=4, updates=10)
    x, y = torch.randn(3, 2), torch.tensor([0, 1, 3])
    gen = torch.Generator()
    targets = [smooth(x, y, gen)[1] for _ in range(8)]
    assert torch.equal(targets[0], nn.functional.one_hot(y, 4).float())  # a = 0 at the start
    a = -0.1  # reached after updates / 2 = 5 calls, and kept
    expected = (1 - a) * nn.functional.one_hot(y, 4).float() + a / 4
    assert torch.allclose(targets[5], expected) and torch.allclose(targets[7], expected)
    assert torch.allclose(targets[2], (1 + 0.04) * nn.functional.one_hot(y, 4).float() - 0.04 / 4)
    assert all(torch.allclose(t.sum(1), torch.ones(3)) for t in targets)
    assert (targets[5] < 0).sum() == 9 and smooth(x, y, gen)[0] is x  # the faces are left as they are


@pytest.mark.parametrize("spec", [DefenceSpec("dpsgd", noise_multiplier=1.0), DefenceSpec("nls", smoothing=-0.1),
                                  DefenceSpec("fixed", k=2)], ids=lambda s: s.name)
def test_standard_defences_train_as_many_updates_on_all_channels(tmp_path, spec):
    defence = spec.name
    m = train_fr_model(load_faces("synthetic"), spec, SMALL, tmp_path / defence, progress=False)
    full = 2 * (640 // 32)  # 2 epochs of the 640 training faces in batches of 32
    assert (full - 2 <= m["updates"] <= full) if defence == "dpsgd" else m["updates"] == full  # DP: empty batches
    model = FRTrainer.load(tmp_path / defence / "fr_model.pt")
    assert model.config.in_channels == (64 if defence in ("dpsgd", "nls") else 54)  # no mask on the baselines
    assert model.config.norm == ("group" if defence == "dpsgd" else "batch")
    if defence == "dpsgd":
        assert m["dp"]["epsilon"] > 0 and m["dp"]["delta"] == 1e-5


def test_split_seed_keeps_the_private_identities_across_training_seeds(tmp_path):
    private = {}
    for seed, split_seed in ((0, 0), (1, 0), (1, None)):
        out = tmp_path / f"s{seed}_{split_seed}"
        train_fr_model(load_faces("synthetic"), DefenceSpec("mask"), SMALL.replace(epochs=1), out, seed=seed,
                       split_seed=split_seed, public_fraction=0.3, progress=False)
        with np.load(out / "split.npz") as z:
            private[(seed, split_seed)] = z["private_idx"]
    assert np.array_equal(private[(0, 0)], private[(1, 0)])  # reproduce.py's seeds share one private split
    assert not np.array_equal(private[(0, 0)], private[(1, None)])  # by default the split follows --seed


def test_defence_spec_refuses_what_it_cannot_train():
    with pytest.raises(ValueError, match=r"nls: smoothing must lie in \(-1, 0\) for negative label smoothing, got 0.1"):
        DefenceSpec("nls", smoothing=0.1)
    with pytest.raises(ValueError, match="unknown defence 'instahide': accepted none, dct, mask"):
        DefenceSpec("instahide")
    with pytest.raises(ValueError, match="policy: a PolicySpec"):
        DefenceSpec("policy")
    with pytest.raises(ValueError, match="dpsgd: noise_multiplier and max_grad_norm must be > 0"):
        DefenceSpec("dpsgd", noise_multiplier=0.0)
    with pytest.raises(ValueError, match="policy algo 'dqn' is unknown: accepted reinforce, ppo, a2c, sac"):
        PolicySpec("agent.zip", "dqn")
    assert DefenceSpec("none").recipe(get_recipe("legacy")).backbone == "pixel"  # its pixel counterpart
    assert DefenceSpec("mask").recipe(get_recipe("real").replace(backbone="pixel")).backbone == "grid"
    assert DefenceSpec("mask").recipe(get_recipe("real")).backbone == "resnet"  # reads both
    assert DefenceSpec("fixed", k=2).as_dict() == {"name": "fixed", "k": 2}
    assert DefenceSpec("dct").dropped_channels == () and DefenceSpec("mask").dropped_channels is None


def run(spec, tmp_path, recipe=SMALL):
    out = tmp_path / spec.name
    m = train_fr_model(load_faces("synthetic"), spec, recipe, out, progress=False)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(m))  # what it returned, written
    return m, out


@pytest.mark.parametrize("spec,recipe", [(DefenceSpec("none"), SMALL), (DefenceSpec("dct"), SMALL),
                                         (DefenceSpec("mask"), SMALL.replace(hflip=True)),
                                         (DefenceSpec("fixed", k=4), SMALL),
                                         (DefenceSpec("random"), SMALL.replace(backbone="unblock"))],
                         ids=lambda v: v.name if isinstance(v, DefenceSpec) else "")
def test_train_fr_model_under_each_defence(tmp_path, spec, recipe):
    defence = spec.name
    m, out = run(spec, tmp_path, recipe)
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
    assert model.config.in_channels == kept and model.card.defence == defence
    assert model.card.input == ("pixel" if defence == "none" else "masked_dct")
    assert model.card.k == (4 if defence == "fixed" else None) and len(model.card.class_names) == 20


def test_train_fr_model_with_a_saved_policy(tmp_path):
    import gymnasium as gym

    import mixup_env  # noqa: F401
    from agents import Reinforce

    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", batch_size=32, episode_steps=4)
    policy = Reinforce(env, seed=0).learn(4, seed=0).save(tmp_path / "policy.pt")
    m, out = run(DefenceSpec("policy", policy=PolicySpec(policy)), tmp_path)
    assert m["defence"] == "policy" and 0 <= m["identification"]["top1"] <= 1
    dist = FRTrainer.load(out / "fr_model.pt").card.k_distribution
    assert dist == m["k_distribution"] and sum(dist.values()) == pytest.approx(1.0)  # the attacker reads it


def test_train_fr_model_co_trains_a_fresh_policy_over_the_fr_run(tmp_path, capsys):
    spec = DefenceSpec("policy", policy=PolicySpec(algo="reinforce", mode="cotrain", reward="constrained",
                                                   validation_fraction=0.2))
    assert spec.as_dict()["policy"] == {"algo": "reinforce", "env_id": "mixup_env/FrequencyMixupPerSample-v0",
                                        "mode": "cotrain", "reward": "constrained", "validation_fraction": 0.2}
    m, out = run(spec, tmp_path)
    assert "co-trained over the FR run" in capsys.readouterr().out
    model = FRTrainer.load(out / "fr_model.pt")
    assert model.updates == m["updates"] > 0  # the co-trained model, at the end of its run (not a fresh one)
    assert model.card.k_distribution == m["k_distribution"] and m["exposure"]["faces_mixed"] > 0
    with pytest.raises(ValueError, match="a frozen policy needs the saved agent's path"):
        PolicySpec()
    with pytest.raises(ValueError, match="policy mode 'online' is unknown: accepted frozen, cotrain"):
        PolicySpec(mode="online")
    assert "mode" not in DefenceSpec("policy", policy=PolicySpec(tmp_path)).as_dict()["policy"]  # old hashes kept


def test_train_fr_model_runs_an_sb3_policy_with_its_observation_statistics(tmp_path, capsys):
    """A policy trained with --normalize saw normalised observations: the policy defence must give it the same."""
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
    train_fr_model(load_faces("synthetic"), DefenceSpec("policy", policy=PolicySpec(path, "ppo")), SMALL.replace(epochs=1),
                   tmp_path / "fr", progress=False)
    assert "observations normalised by its saved VecNormalize statistics" in capsys.readouterr().out


def test_train_fr_command_line_takes_the_policy_mode(capsys):
    from privacy.cli import _train_fr_args

    args = _train_fr_args(["--defence", "policy", "--policy-mode", "cotrain", "--policy-reward", "constrained",
                           "--policy-validation-fraction", "0.2"], None)
    assert args.spec.policy == PolicySpec(None, "reinforce", "mixup_env/FrequencyMixupPerSample-v0", "cotrain",
                                          "constrained", 0.2)
    with pytest.raises(SystemExit):
        _train_fr_args(["--defence", "policy"], None)
    assert "needs --policy PATH (or --policy-mode cotrain)" in capsys.readouterr().err
