import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mixup_env
from fr_models import FRTrainer
from mixup_env import GLOBAL_FEATURES, SAMPLE_FEATURES, FrequencyMixupEnv, register_reward, split_observation
from mixup_env.rewards import _REWARDS

ENV_ID = "mixup_env/FrequencyMixup-v0"


def rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rewards, infos = [], []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append(obs)
        rewards.append(r)
        infos.append(info)
    return np.stack(out), np.array(rewards), infos


def test_registered_and_makes(tiny_env_kwargs):
    assert ENV_ID in gym.registry and ENV_ID in mixup_env.ENV_IDS
    env = gym.make(ENV_ID, **tiny_env_kwargs)
    assert isinstance(env.unwrapped, FrequencyMixupEnv)
    assert env.action_space == gym.spaces.Discrete(5)
    assert env.observation_space.shape == (6 + 16 * 6,) and env.observation_space.dtype == np.float32


@pytest.mark.parametrize("env_id,control_alpha", [(i, False) for i in mixup_env.ENV_IDS]
                         + [(i, True) for i in mixup_env.ENV_IDS if "Continuous" in i])
def test_gymnasium_and_sb3_env_checkers_pass(tiny_env_kwargs, env_id, control_alpha):
    kw = {**tiny_env_kwargs, "control_alpha": control_alpha}
    env = gym.make(env_id, **kw)
    assert env.unwrapped.action_mode == mixup_env.ENV_IDS[env_id]
    gym_check_env(env.unwrapped, skip_render_check=True, skip_close_check=True)
    sb3_check_env(FrequencyMixupEnv(action_mode=mixup_env.ENV_IDS[env_id], **kw), warn=True)


@pytest.mark.parametrize("mode,space", [
    ("batch_discrete", gym.spaces.Discrete(5)),
    ("sample_discrete", gym.spaces.MultiDiscrete([5] * 16)),
    ("batch_continuous", gym.spaces.Box(-1, 1, (1,), np.float32)),
    ("sample_continuous", gym.spaces.Box(-1, 1, (16,), np.float32)),
])
def test_action_modes_spaces_and_k_encoding(tiny_env_kwargs, mode, space):
    env = FrequencyMixupEnv(action_mode=mode, **tiny_env_kwargs)
    assert env.action_space == space
    env.reset(seed=0)
    for k in (2, 4, 6):
        action = env.action_for_k(k)
        assert env.action_space.contains(action)
        _, _, _, _, info = env.step(action)
        assert info["k"] == k and (info["k_per_sample"] == k).all()
    if mode.startswith("sample"):
        ks = [2, 3, 4, 5, 6, 2, 3, 4, 5, 6, 2, 2, 2, 2, 6, 6]
        _, _, _, _, info = env.step(env.action_for_k(ks))
        assert info["k_per_sample"].tolist() == ks and info["k"] == pytest.approx(np.mean(ks))
        assert info["mixed_loss_per_sample"].shape == (16,)
    else:
        with pytest.raises(ValueError, match="give one k"):
            env.action_for_k([2, 3])
    with pytest.raises(ValueError, match=r"k \[7\] not in k_values"):
        env.action_for_k(7)


def test_continuous_mapping_to_k_and_alpha(tiny_env_kwargs):
    env = FrequencyMixupEnv(action_mode="sample_continuous", control_alpha=True, alpha_range=(0.1, 10.0),
                            **tiny_env_kwargs)
    assert env.action_space.shape == (32,)
    a = np.concatenate([np.linspace(-1, 1, 16), np.full(16, -1.0)]).astype(np.float32)
    k, alpha = env.decode_action(a)
    assert k[0] == 2 and k[-1] == 6 and k[7] == 4 and (np.diff(k) >= 0).all()
    assert np.allclose(alpha, 0.1)
    _, alpha = env.decode_action(np.concatenate([np.zeros(16), np.ones(16)]).astype(np.float32))
    assert np.allclose(alpha, 10.0)
    _, alpha = env.decode_action(np.zeros(32, np.float32))
    assert np.allclose(alpha, 1.0)  # geometric middle of (0.1, 10)
    assert np.allclose(env.decode_action(env.action_for_k(3, alpha=0.1))[1], 0.1)
    env.reset(seed=0)
    _, _, _, _, info = env.step(a)
    assert info["alpha"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"expected 32 finite values in \[-1, 1\] \(k values, then alpha values\)"):
        env.step(np.full(32, 1.5, np.float32))
    with pytest.raises(ValueError, match="control_alpha=True needs a continuous action_mode"):
        FrequencyMixupEnv(action_mode="sample_discrete", control_alpha=True, **tiny_env_kwargs)


def test_per_sample_observation_features(tiny_env_kwargs):
    env = FrequencyMixupEnv(action_mode="sample_discrete", **tiny_env_kwargs)
    obs, _ = env.reset(seed=0)
    glob, per = split_observation(obs)
    assert glob.shape == (len(GLOBAL_FEATURES),) and per.shape == (16, len(SAMPLE_FEATURES))
    assert ((obs >= 0) & (obs <= 1)).all()
    x, y = env._batch
    stats = env.trainer.sample_stats(x, y)
    loss = stats["loss"].numpy()
    assert np.allclose(per[:, 0], loss / (loss + np.log(env.num_classes)), atol=1e-6)
    assert np.allclose(per[:, 1], stats["confidence"].numpy(), atol=1e-6)
    assert np.allclose(per[:, 2], (stats["margin"].numpy() + 1) / 2, atol=1e-6)
    counts = np.bincount(env._train_y.numpy(), minlength=env.num_classes)
    assert np.allclose(per[:, 3], counts[y.numpy()] / counts.max())
    assert (per[:, 4] == 0).all() and (per[:, 5] == 0).all()  # no face mixed yet
    # batched observations split too
    g2, p2 = split_observation(np.stack([obs, obs]))
    assert g2.shape == (2, 6) and p2.shape == (2, 16, 6)
    with pytest.raises(ValueError, match="6 \\+ N\\*6 entries"):
        split_observation(obs[:-1])


def test_observed_exposure_is_the_faces_exposure_so_far(tiny_env_kwargs):
    env = FrequencyMixupEnv(action_mode="sample_discrete", **{**tiny_env_kwargs, "episode_steps": 44})
    env.reset(seed=3)
    seen = 0.0
    for _ in range(env.episode_steps - 1):  # past one epoch (40 batches) faces recur with the exposure they had
        obs, *_ = env.step(env.action_for_k([2] * 16))
        faces = env._batch_idx
        _, per = split_observation(obs)
        e = env.exposure
        assert np.allclose(per[:, 4], e.max_weight[faces].numpy(), atol=1e-6)
        mean = np.where(e.mixes[faces].numpy() > 0, (e.weight_sum[faces] / e.mixes[faces].clamp_min(1)).numpy(), 0)
        assert np.allclose(per[:, 5], mean, atol=1e-6)
        seen = max(seen, float(per[:, 4].max()))
    assert seen >= 0.5  # k = 2: a face mixed before had a weight >= 1/2 as the sample or its partner


def test_the_observed_accuracy_never_reads_the_test_faces(tiny_env_kwargs):
    env = FrequencyMixupEnv(**tiny_env_kwargs)
    obs, info = env.reset(seed=0)
    at = GLOBAL_FEATURES.index("observed_accuracy")
    assert obs[at] == pytest.approx(env.trainer.accuracy(env._calib_x, env._calib_y))
    env._test_y = (env._test_y + 1) % env.num_classes  # the test labels no longer matter to the observation
    for _ in range(3):
        obs, _, _, _, info = env.step(0)
    assert info["evaluated"] and info["accuracy"] == env.trainer.accuracy(env._test_x, env._test_y)
    assert obs[at] == pytest.approx(env.trainer.accuracy(env._calib_x, env._calib_y))
    val = FrequencyMixupEnv(validation_fraction=0.3, **tiny_env_kwargs)
    obs, _ = val.reset(seed=0)
    assert obs[at] == pytest.approx(val.trainer.accuracy(val._val_x, val._val_y))


def test_same_seed_and_actions_give_identical_trajectories(tiny_env_kwargs):
    env = gym.make(ENV_ID, **tiny_env_kwargs)
    actions = [0, 4, 2, 2, 1, 3]
    o1, r1, i1 = rollout(env, 11, actions)
    o2, r2, i2 = rollout(gym.make(ENV_ID, **tiny_env_kwargs), 11, actions)
    assert np.array_equal(o1, o2) and np.array_equal(r1, r2)
    assert [i["accuracy"] for i in i1] == [i["accuracy"] for i in i2]
    o3, r3, _ = rollout(env, 12, actions)
    assert not np.array_equal(r1, r3)


def test_step_semantics_info_and_truncation(tiny_env_kwargs):
    env = gym.make(ENV_ID, **tiny_env_kwargs)
    obs, info = env.reset(seed=0)
    assert obs[0] == 0.0 and obs[GLOBAL_FEATURES.index("last_k")] == 0.0 and 0.0 <= info["accuracy"] <= 1.0
    for t in range(1, 7):
        obs, reward, terminated, truncated, info = env.step(4 if t % 2 else 0)
        assert set(info) >= {"mixed_loss", "clean_loss", "accuracy", "evaluated", "k", "step"}
        assert info["k"] == (6.0 if t % 2 else 2.0) and info["step"] == t
        assert isinstance(reward, float) and reward == info["mixed_loss"]  # default reward: fr_loss
        assert obs[0] == pytest.approx(t / 6) and env.observation_space.contains(obs)
        assert info["evaluated"] == (t % 3 == 0)
        assert terminated is False and truncated == (t == 6)


def test_mixing_more_images_raises_the_loss(tiny_env_kwargs):
    """More images mixed: a harder (higher-loss) batch than the clean one, on average."""
    env = gym.make(ENV_ID, **{**tiny_env_kwargs, "episode_steps": 30, "batch_size": 32})
    gaps = {}
    for a in (0, 4):
        _, _, infos = rollout(env, 0, [a] * 30)
        gaps[a] = np.mean([i["mixed_loss"] - i["clean_loss"] for i in infos])
    assert gaps[4] > gaps[0] > 0


def test_k_values_with_k1_is_unmixed_training(tiny_env_kwargs):
    env = gym.make(ENV_ID, **{**tiny_env_kwargs, "k_values": (1, 3)})
    env.reset(seed=0)
    _, _, _, _, info = env.step(0)
    assert info["k"] == 1.0
    # unmixed: the train-mode loss on the batch is close to the eval-mode clean loss of the same batch
    assert info["mixed_loss"] == pytest.approx(info["clean_loss"], rel=0.3)


def test_label_entropy_in_info_and_the_honest_reward(tiny_env_kwargs):
    """The env reports its soft labels' entropy; ``fr_loss_learnable`` is the mixed loss less it, never negative."""
    env = gym.make(ENV_ID, reward="fr_loss_learnable", **{**tiny_env_kwargs, "k_values": (1, 2, 6)})
    env.reset(seed=0)
    _, r1, _, _, one = env.step(0)
    assert one["label_entropy"] == 0.0  # k = 1: one-hot labels, nothing unlearnable
    assert r1 == pytest.approx(one["mixed_loss"])
    _, r6, _, _, six = env.step(2)
    assert six["label_entropy"] == pytest.approx(float(np.mean(six["label_entropy_per_sample"])))
    assert six["label_entropy"] > 0.8  # about H_6 - 1 = 1.45 nats, less where partners share an identity
    assert r6 == pytest.approx(six["mixed_loss"] - six["label_entropy"], abs=1e-6)
    # a sample's loss is its label entropy plus what the model could still learn (>= 0)
    assert (six["mixed_loss_per_sample"] >= six["label_entropy_per_sample"] - 1e-5).all()


def test_custom_reward_by_name_with_kwargs(tiny_env_kwargs):
    before = dict(_REWARDS)
    try:
        @register_reward("test_gap")
        def gap(record, weight=1.0):
            return record.mixed_loss - weight * record.clean_loss

        env = gym.make(ENV_ID, reward="test_gap", reward_kwargs={"weight": 0.5}, **tiny_env_kwargs)
        env.reset(seed=0)
        _, r, _, _, info = env.step(2)
        assert r == pytest.approx(info["mixed_loss"] - 0.5 * info["clean_loss"])
        with pytest.raises(ValueError, match=r"unknown reward 'nope'; known rewards: .*fr_loss.*test_gap"):
            gym.make(ENV_ID, reward="nope", **tiny_env_kwargs)
    finally:
        _REWARDS.clear()
        _REWARDS.update(before)


def test_utility_aware_reward_reports_terms(tiny_env_kwargs):
    env = FrequencyMixupEnv(reward="utility_aware", **tiny_env_kwargs)
    env.reset(seed=0)
    _, r, _, _, info = env.step(0)
    assert set(info["reward_terms"]) == {"mixing_cost", "privacy_shortfall"}
    assert r == pytest.approx(sum(info["reward_terms"].values()))
    assert "clean_loss_after" not in info  # utility_aware does not read it, so it is not measured


def test_clean_loss_after_is_measured_on_demand_and_changes_nothing_else(tiny_env_kwargs):
    def run(**kw):
        env = FrequencyMixupEnv(**tiny_env_kwargs, **kw)
        obs, _ = env.reset(seed=3)
        out = [(obs, 0.0, math.nan)]
        for a in [0, 4, 2, 1]:
            obs, r, _, _, info = env.step(a)
            out.append((obs, r, info.get("clean_loss_after", math.nan)))
        return out

    lazy, eager = run(), run(measure_all=True)
    progress = run(reward="weighted_sum", reward_kwargs={"terms": {"learning_progress": 1.0}})
    for (o1, r1, a1), (o2, r2, a2), (_, _, a3) in zip(lazy[1:], eager[1:], progress[1:]):
        np.testing.assert_allclose(o1, o2, atol=1e-5)  # same trajectory (one forward of N vs 2N: rounding only)
        assert r1 == pytest.approx(r2, abs=1e-6)
        assert math.isnan(a1) and a2 > 0 and a3 == pytest.approx(a2, abs=1e-5)


def test_unknown_action_mode_is_rejected(tiny_env_kwargs):
    with pytest.raises(ValueError, match="unknown action_mode 'per_pixel'; accepted: batch_discrete, sample_discrete"):
        FrequencyMixupEnv(action_mode="per_pixel", **tiny_env_kwargs)


@pytest.mark.parametrize("action", [5, -1, 2.0, np.array([1, 2]), "3"])
def test_action_outside_the_space_is_rejected(tiny_env_kwargs, action):
    env = FrequencyMixupEnv(**tiny_env_kwargs)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"outside the action space Discrete\(5\).*0\.\.4.*k_values=\(2, 3, 4, 5, 6\)"):
        env.step(action)
    env.step(np.int64(4))  # numpy integers are fine
    env.step(np.array(1))


def test_bad_configuration_is_rejected(tiny_env_kwargs, tmp_path):
    kw = dict(tiny_env_kwargs)
    with pytest.raises(ValueError, match=r"k_values \[8\] cannot be mixed within a batch of 4.*1\.\.batch_size"):
        FrequencyMixupEnv(**{**kw, "batch_size": 4, "k_values": (2, 8)})
    with pytest.raises(ValueError, match="distinct integers"):
        FrequencyMixupEnv(**{**kw, "k_values": (2, 2)})
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "odd.npz", images=rng.integers(0, 255, (40, 20, 20), dtype=np.uint8), labels=np.arange(40) % 4)
    with pytest.raises(ValueError, match=r"20x20 with upsample=1 does not fill whole 8x8 blocks.*image_size="):
        FrequencyMixupEnv(data=str(tmp_path / "odd.npz"), **kw)
    env = FrequencyMixupEnv(data=str(tmp_path / "odd.npz"), image_size=16, **kw)
    assert env.fr_config.input_size == (2, 2)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        FrequencyMixupEnv(data=str(tmp_path / "empty.npz"), **kw)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        FrequencyMixupEnv(data=str(tmp_path / "missing.npz"), **kw)
    with pytest.raises(ValueError, match="known heads"):
        FrequencyMixupEnv(head="nope", **kw)
    with pytest.raises(RuntimeError, match="reset"):
        FrequencyMixupEnv(**kw).step(0)


def test_save_fr_model_round_trip(tiny_env_kwargs, tmp_path):
    env = FrequencyMixupEnv(**tiny_env_kwargs)
    env.reset(seed=0)
    env.step(1)
    path = env.save_fr_model(tmp_path / "fr.pt")
    loaded = FRTrainer.load(path)
    x = env._test_x
    assert torch.equal(loaded.predict(x), env.trainer.predict(x))
    assert loaded.updates == 1


def test_unblock_backbone_and_arcface_run(tiny_env_kwargs):
    env = FrequencyMixupEnv(**{**tiny_env_kwargs, "backbone": "unblock", "widths": (4, 8, 8, 8), "head": "arcface"})
    env.reset(seed=0)
    _, r, _, _, info = env.step(0)
    assert np.isfinite(r) and info["k"] == 2.0


def test_real_faces_need_resizing_then_run(data_root, tiny_env_kwargs):
    with pytest.raises(ValueError, match="112x92"):
        FrequencyMixupEnv(data="att_faces", **tiny_env_kwargs)
    env = FrequencyMixupEnv(data="att_faces", image_size=64, **tiny_env_kwargs)
    assert env.num_classes == 40
    env.reset(seed=0)
    _, r, _, _, _ = env.step(0)
    assert np.isfinite(r)


def test_hflip_augmentation_mirrors_about_half_the_batch(tiny_env_kwargs):
    env = FrequencyMixupEnv(hflip=True, **{**tiny_env_kwargs, "batch_size": 64})
    env.reset(seed=0)
    x, _ = env._batch
    # every sample is either a training sample or its exact mirror
    train = env._train_x.reshape(len(env._train_x), -1)
    mirrored = env.masking.hflip(env._train_x).reshape(len(env._train_x), -1)
    as_is = (x.reshape(64, 1, -1) == train.unsqueeze(0)).all(-1).any(1)
    flipped = (x.reshape(64, 1, -1) == mirrored.unsqueeze(0)).all(-1).any(1)
    assert bool((as_is | flipped).all())
    assert 16 <= int(flipped.sum()) <= 48
    gym_check_env(FrequencyMixupEnv(hflip=True, **tiny_env_kwargs), skip_render_check=True, skip_close_check=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["batch_discrete", "sample_continuous"])
def test_env_on_cuda_follows_the_cpu_trajectory(tiny_env_kwargs, mode):
    # the mixing draws are made on the CPU on both devices, so the same seed and actions give the same mixes
    def run(device):
        env = FrequencyMixupEnv(**tiny_env_kwargs, action_mode=mode, device=device)
        env.action_space.seed(0)
        obs, _ = env.reset(seed=1)
        out = [obs]
        for _ in range(3):
            obs, r, _, _, info = env.step(env.action_space.sample())
            out += [obs, np.array([r]), info["k_per_sample"]]
        return out

    for a, b in zip(run("cpu"), run("cuda")):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_a_validation_split_feeds_the_constrained_reward(tiny_env_kwargs):
    import math

    from fr_models.data import FaceData

    env = gym.make(ENV_ID, reward="constrained", reward_kwargs={"target": 0.5}, validation_fraction=0.25,
                   **{**tiny_env_kwargs, "k_values": (2, 6)})
    u = env.unwrapped
    val = set(u.data.val_indices.tolist())
    assert val and not val & set(u.train_indices.tolist()) and not val & set(u.test_indices.tolist())
    env.reset(seed=0)
    previous = u._validation_loss()
    multipliers = []
    for a in (0, 0, 1):
        _, r, _, _, info = env.step(a)
        assert info["validation_gain"] == pytest.approx(previous - info["validation_loss"], abs=1e-6)
        previous = info["validation_loss"]
        assert r == pytest.approx(sum(info["reward_terms"].values()))
        multipliers.append(u.reward_fn.multiplier)
    assert multipliers[1] > multipliers[0] > 0  # k = 2 mixes exceed the 0.5 target: lambda rises
    assert multipliers[2] < multipliers[1]  # k = 6 mixes hold it: lambda falls
    with pytest.raises(ValueError, match="reads validation_loss: build the env with validation_fraction > 0"):
        gym.make(ENV_ID, reward="constrained", **tiny_env_kwargs)
    two = FaceData(np.zeros((8, 32, 32), np.uint8), np.repeat(np.arange(4), 2), [], "two-per-identity")
    with pytest.raises(ValueError, match="too small to hold a validation split"):
        gym.make(ENV_ID, data=two, reward="constrained", validation_fraction=0.25,
                 **{**tiny_env_kwargs, "batch_size": 2, "k_values": (2,)})
    assert not math.isnan(previous)
