"""Reliability: bad input gets a clear error, faults lose nothing, a resumed run continues exactly, memory holds."""

from __future__ import annotations

import gc
import io
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import make_vec_env
from fr_models import CheckpointError, FRConfig, FRTrainer, load_checkpoint
from privacy.attacks import load_target
from fr_models.data import check_identity_split, load_faces, split_identities, split_per_identity
from mixup_env import ACTION_MODES, FrequencyMixupEnv, mix_batch, register_reward
from mixup_env.transform import ChannelMask, block_dct

TINY: dict[str, Any] = {"batch_size": 8, "recipe": "tiny", "image_size": 16, "episode_steps": 12,
                        "eval_every": 4}


# ------------------------------------------------------------------------------------------- bad input table
def _env(**kw: Any) -> Any:
    return FrequencyMixupEnv(**{**TINY, **kw})


def _make(**kw: Any) -> Any:
    return gym.make("mixup_env/FrequencyMixup-v0", **{**TINY, **kw})


def _step(action: Any, mode: str = "batch_discrete") -> Any:
    env = _env(action_mode=mode)
    env.reset(seed=0)
    return env.step(action)


def _npz(tmp: Path, **arrays: Any) -> Path:
    path = tmp / "faces.npz"
    np.savez(path, **arrays)
    return path


BAD_INPUTS = [
    # env constructor and gymnasium.make kwargs
    ("action_mode", lambda t: _env(action_mode="per_pixel"), ValueError, "accepted: batch_discrete, sample_discrete"),
    ("k_values empty", lambda t: _env(k_values=()), ValueError, r"k_values=\(\) is invalid"),
    ("k_values repeated", lambda t: _env(k_values=(2, 2)), ValueError, "distinct integers"),
    ("k_values > batch", lambda t: _env(k_values=(2, 99)), ValueError, r"accepted k in 1..batch_size"),
    ("batch_size 0", lambda t: _env(batch_size=0), ValueError, "batch_size=0 is invalid: accepted a positive"),
    ("batch_size too big", lambda t: _env(batch_size=10**6, k_values=(2,)), ValueError, "exceeds the"),
    ("episode_steps 0", lambda t: _make(episode_steps=0), ValueError, "episode_steps=0 is invalid"),
    ("eval_every -1", lambda t: _make(eval_every=-1), ValueError, "eval_every=-1 is invalid"),
    ("dirichlet_alpha 0", lambda t: _env(dirichlet_alpha=0.0), ValueError, "dirichlet_alpha=0.0 is invalid"),
    ("alpha_range", lambda t: _env(alpha_range=(0.0, 1.0), action_mode="batch_continuous"), ValueError,
     r"0 < low <= high"),
    ("control_alpha discrete", lambda t: _env(control_alpha=True), ValueError, "needs a continuous action_mode"),
    ("image_size", lambda t: _env(image_size=20), ValueError, "accepted sides that are positive multiples of 8"),
    ("dropped channel", lambda t: _env(dropped_channels=[64]), ValueError, r"accepted indices 0..63"),
    ("all dropped", lambda t: _env(dropped_channels=range(64)), ValueError, "keep at least one"),
    ("test_fraction", lambda t: _env(test_fraction=1.5), ValueError, "accepted 0 < test_fraction < 1"),
    ("backbone", lambda t: _env(backbone="iresnet"), ValueError, "known backbones: grid"),
    ("head", lambda t: _env(head="softermax"), ValueError, "known heads: "),
    ("widths", lambda t: _env(widths=(4,)), ValueError, "skip 3 stages, but the body has only 1"),
    ("upsample", lambda t: _env(upsample=3), ValueError, r"accepted factors \[1, 2, 4, 8\]"),
    ("upsample size", lambda t: _env(image_size=18, upsample=2), ValueError, "multiples of 4"),
    ("colour", lambda t: _env(colour="ycbcr"), ValueError, "needs 3 colour planes"),
    ("recipe", lambda t: _env(recipe="huge"), ValueError, "unknown FR recipe"),
    ("storage", lambda t: _env(storage="int8"), ValueError, "accepted 'float32' or 'float16'"),
    ("embedding_dim", lambda t: _env(embedding_dim=0), ValueError, "embedding_dim=0 is invalid: accepted"),
    ("lr", lambda t: _env(lr=-1.0), ValueError, "lr=-1.0 is invalid: accepted a positive"),
    ("device", lambda t: _env(device="tpu"), ValueError, "device='tpu' is invalid"),
    ("data name", lambda t: _env(data="no_such_faces"), FileNotFoundError, "no_such_faces"),
    # rewards
    ("reward name", lambda t: _make(reward="nope"), ValueError, "unknown reward 'nope'; known rewards: .*fr_loss"),
    ("reward kwargs", lambda t: _make(reward="utility_aware", reward_kwargs={"flor": 0.5}), TypeError,
     "does not accept reward_kwargs"),
    ("reward floor", lambda t: _make(reward="utility_aware", reward_kwargs={"floor": 5}), ValueError,
     "accepted 0 < floor <= 2"),
    ("weighted_sum term", lambda t: _make(reward="weighted_sum", reward_kwargs={"terms": {"joy": 1}}), ValueError,
     "unknown reward term 'joy'; accepted"),
    ("reward registry name", lambda t: register_reward("")(lambda r: 0.0), ValueError, "non-empty string"),
    # actions
    ("discrete action", lambda t: _step(7), ValueError, r"outside the action space Discrete\(5\)"),
    ("per-sample action", lambda t: _step(np.zeros(3, dtype=np.int64), "sample_discrete"), ValueError,
     "outside the action space MultiDiscrete"),
    ("NaN action", lambda t: _step(np.array([np.nan], dtype=np.float32), "batch_continuous"), ValueError,
     r"outside the action space Box.*finite values in \[-1, 1\]"),
    ("continuous shape", lambda t: _step(np.zeros(3, dtype=np.float32), "batch_continuous"), ValueError,
     "expected 1 finite values"),
    # mixing and the transform
    ("mix k 0", lambda t: mix_batch(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 0, 3), ValueError,
     r"k must be >= 1"),
    ("mix k > N", lambda t: mix_batch(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 5, 3), ValueError,
     r"accepted k in 1..4"),
    ("mix labels", lambda t: mix_batch(torch.zeros(4, 2), torch.full((4,), 7), 2, 3), ValueError,
     r"labels must lie in 0..2"),
    ("mix alpha", lambda t: mix_batch(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 2, 3, alpha=0.0),
     ValueError, "alpha must be > 0"),
    ("dct dtype", lambda t: block_dct(torch.zeros(1, 1, 8, 8, dtype=torch.long)), TypeError, "floating-point"),
    ("dct shape", lambda t: block_dct(torch.zeros(1, 1, 12, 8)), ValueError, "not a multiple of 8"),
    ("mask planes", lambda t: ChannelMask(planes=0), ValueError, "planes=0 is invalid"),
    # data loaders and splits
    ("npz missing", lambda t: load_faces(t / "absent.npz"), FileNotFoundError, "does not exist"),
    ("npz not zip", lambda t: load_faces(_write(t / "x.npz", b"hello")), ValueError, "not a readable .npz"),
    ("npz keys", lambda t: load_faces(_npz(t, pictures=np.zeros((2, 8, 8)))), ValueError, "'images'"),
    ("split fraction", lambda t: split_per_identity(np.array([0, 0, 1, 1]), 0.0), ValueError,
     "accepted 0 < test_fraction < 1"),
    ("public fraction", lambda t: split_identities(np.array([0, 1]), 1.0), ValueError,
     "accepted 0 < public_fraction < 1"),
    ("forced overlap", lambda t: check_identity_split(np.array([0, 0, 1, 1]), np.array([0, 2]), np.array([1, 3])),
     ValueError, "on both the private and the public side"),
    # FR models, checkpoints, agents, attacks
    ("FRConfig", lambda t: FRConfig(in_channels=0, input_size=(8, 8), num_classes=3), ValueError,
     "in_channels=0 is invalid"),
    ("checkpoint missing", lambda t: FRTrainer.load(t / "absent.pt"), FileNotFoundError, "no FR checkpoint at"),
    ("checkpoint garbage", lambda t: FRTrainer.load(_write(t / "x.pt", b"\x80\x02garbage")), CheckpointError,
     "is not a readable FR checkpoint"),
    ("target not a model", lambda t: load_target(_save(t / "d.pt", {"weights": torch.zeros(2)})), ValueError,
     "is not an FR model checkpoint"),
    ("n_envs", lambda t: make_vec_env("mixup_env/FrequencyMixup-v0", n_envs=0), ValueError, "n_envs=0 is invalid"),
    ("vec_env", lambda t: make_vec_env("mixup_env/FrequencyMixup-v0", vec_env="threads"), ValueError,
     "accepted: dummy, subproc"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, obj: Any) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("name, call, error, match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_a_clear_error(tmp_path: Path, name: str, call: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call(tmp_path)


def test_the_bad_input_table_is_wide() -> None:
    assert len(BAD_INPUTS) >= 25 and len({b[0] for b in BAD_INPUTS}) == len(BAD_INPUTS)


# ----------------------------------------------------------------------------------- property-based tests
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(ACTION_MODES), batch=st.integers(2, 12), ks=st.sets(st.integers(1, 6), min_size=1),
       alpha=st.floats(0.05, 20.0), control=st.booleans(), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_any_valid_configuration_and_action_steps_without_crashing(mode, batch, ks, alpha, control, seed, data):
    control = control and mode.endswith("continuous")
    ks = tuple(sorted(k for k in ks if k <= batch)) or (1,)
    env = FrequencyMixupEnv(**{**TINY, "batch_size": batch, "k_values": ks, "dirichlet_alpha": alpha,
                               "action_mode": mode, "control_alpha": control, "episode_steps": 3})
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(3):
        if mode.endswith("continuous"):  # any value in the box, the bounds included
            action = np.asarray(data.draw(st.lists(st.floats(-1.0, 1.0), min_size=env.action_space.shape[0],
                                                   max_size=env.action_space.shape[0])), dtype=np.float32)
        else:
            action = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs) and math.isfinite(reward) and not terminated
        assert set(np.unique(info["k_per_sample"])) <= set(ks)
    assert truncated


@settings(max_examples=40, deadline=None)
@given(action=st.one_of(st.integers(-5, 10), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                        st.lists(st.floats(allow_nan=True), max_size=3)))
def test_any_action_is_stepped_or_refused_with_a_value_error(action):
    env = _STEP_ENV
    try:
        if env.step(action)[3]:
            env.reset()  # stepping past an episode's end is refused
    except ValueError as e:
        assert "outside the action space" in str(e)


_STEP_ENV = _env()
_STEP_ENV.reset(seed=0)


# ------------------------------------------------------------------------------------ non-finite training
def test_a_non_finite_loss_ends_the_episode_and_keeps_the_last_finite_model() -> None:
    env = _env()
    env.reset(seed=0)
    env.step(0)
    before = {k: v.clone() for k, v in env.trainer.backbone.state_dict().items()}
    env._batch = (torch.full_like(env._batch[0], float("nan")), env._batch[1])  # a poisoned batch
    obs, reward, terminated, truncated, info = env.step(0)
    assert truncated and not terminated and info["truncated_reason"] == "non-finite FR loss"
    assert reward == 0.0 and env.observation_space.contains(obs)
    for k, v in env.trainer.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k  # the update was not applied
    obs, _ = env.reset()  # and the next episode starts normally
    _, reward, _, truncated, info = env.step(0)
    assert math.isfinite(reward) and not truncated and "truncated_reason" not in info


def test_non_finite_weights_are_restored_from_the_last_finite_state() -> None:
    env = _env()
    env.reset(seed=0)
    for a in range(4):  # step 4 is an evaluation step: the finite state is saved there
        env.step(a % 5)
    saved = {k: v.clone() for k, v in env.trainer.state_dict()["backbone"].items()}
    env.step(1)
    with torch.no_grad():
        next(env.trainer.backbone.parameters()).fill_(float("inf"))  # corrupted weights
    obs, reward, _, truncated, info = env.step(2)
    assert truncated and info["truncated_reason"] == "non-finite FR weights" and reward == 0.0
    restored = env.trainer.state_dict()["backbone"]
    for k, v in saved.items():
        assert torch.equal(restored[k], v), k
    assert all(torch.isfinite(p).all() for p in env.trainer.backbone.parameters())
    env.reset()
    assert math.isfinite(env.step(0)[1])


# ------------------------------------------------------------------------------------ checkpoints, resume
def _trajectory(env: FrequencyMixupEnv, actions: list[Any]) -> list[Any]:
    out = []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, trunc, info["k_per_sample"].copy()))
        if trunc:
            obs, _ = env.reset()
            out.append((obs,))
    return out


@pytest.mark.parametrize("mode", ["sample_discrete", "batch_continuous"])
def test_resume_from_a_checkpoint_gives_the_same_trajectory(tmp_path: Path, mode: str) -> None:
    kw = {"action_mode": mode, "hflip": True}
    ref = _env(**kw)
    ref.action_space.seed(5)
    actions = [ref.action_space.sample() for _ in range(20)]  # crosses an episode end (12 steps) and evaluations
    ref.reset(seed=3)
    full = _trajectory(ref, actions)

    first = _env(**kw)
    first.reset(seed=3)
    head = _trajectory(first, actions[:7])
    first.save_checkpoint(tmp_path / "env.pt")
    resumed = _env(**kw)  # a fresh process would build the env the same way
    resumed.load_checkpoint(tmp_path / "env.pt")
    tail = _trajectory(resumed, actions[7:])
    for a, b in zip(head + tail, full, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    for (k, v), (k2, v2) in zip(ref.trainer.state_dict()["backbone"].items(),
                                resumed.trainer.state_dict()["backbone"].items()):
        assert k == k2 and torch.equal(v, v2)


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path: Path) -> None:
    env = _env()
    env.reset(seed=0)
    env.save_checkpoint(tmp_path / "env.pt")
    with pytest.raises(ValueError, match="was saved by an env configured differently: batch_size 8 there, 4 here"):
        _env(batch_size=4, k_values=(2, 3)).load_checkpoint(tmp_path / "env.pt")
    with pytest.raises(RuntimeError, match="call reset"):
        _env().save_checkpoint(tmp_path / "none.pt")


def test_a_checkpoint_of_another_version_is_refused(tmp_path: Path) -> None:
    env = _env()
    env.reset(seed=0)
    path = env.save_checkpoint(tmp_path / "env.pt")
    state = torch.load(path, weights_only=True)
    state["version"] = 0
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="is a version 0 env checkpoint; this mixup_env reads version 3 only"):
        _env().load_checkpoint(tmp_path / "old.pt")


def test_stepping_past_the_end_and_reset_options_are_refused_clearly() -> None:
    env = _env(episode_steps=2)
    with pytest.raises(ValueError, match=r"reset\(options=\{'k': 3\}\): this env takes no reset options"):
        env.reset(seed=0, options={"k": 3})
    env.reset(seed=0, options={})  # empty options are no options
    assert not env.step(0)[3] and env.step(0)[3]  # truncated after the second step
    with pytest.raises(RuntimeError, match="the episode was truncated after 2 steps: call reset"):
        env.step(0)
    env.reset()
    env._batch = (torch.full_like(env._batch[0], float("nan")), env._batch[1])  # a fault ends the episode too
    assert env.step(0)[3]
    with pytest.raises(RuntimeError, match=r"truncated after 1 steps \(non-finite FR loss\): call reset"):
        env.step(0)


@pytest.mark.parametrize("loader", ["fr", "env", "reinforce", "generic"])
def test_truncated_checkpoints_are_refused_clearly(tmp_path: Path, loader: str) -> None:
    env = _env(action_mode="sample_discrete")
    env.reset(seed=0)
    path = tmp_path / "ckpt.pt"
    if loader == "fr":
        env.save_fr_model(path)
        load = lambda: FRTrainer.load(path)  # noqa: E731
    elif loader == "env":
        env.save_checkpoint(path)
        load = lambda: _env(action_mode="sample_discrete").load_checkpoint(path)  # noqa: E731
    elif loader == "reinforce":
        from agents import Reinforce

        Reinforce(env, seed=0).save(path)
        load = lambda: Reinforce.load(path, env)  # noqa: E731
    else:
        torch.save({"a": torch.zeros(3)}, path)
        load = lambda: load_checkpoint(path, "test checkpoint")  # noqa: E731
    load()  # the intact file loads
    data = path.read_bytes()
    cut = int(np.random.default_rng(len(data)).integers(1, len(data) - 1))
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=rf"{path.name}.* is not a readable .*truncated"):
        load()


class _Exploit:
    def __reduce__(self):  # unpickling this would run a shell command
        import os

        return (os.system, ("touch PWNED",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"config": _Exploit()}, path)  # torch.save pickles it; only an unsafe load would run it
    for load in (lambda: FRTrainer.load(path), lambda: _env().load_checkpoint(path),
                 lambda: load_checkpoint(path, "test checkpoint")):
        with pytest.raises(CheckpointError, match="refused"):
            load()
    buf = io.BytesIO()
    pickle.dump(_Exploit(), buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError):
        load_checkpoint(path, "test checkpoint")
    assert not (tmp_path / "PWNED").exists()


# --------------------------------------------------------------------------------------------- long runs
def test_no_tensors_accumulate_across_steps_and_episodes() -> None:
    env = _env(episode_steps=10)
    env.action_space.seed(0)
    env.reset(seed=0)

    def live_tensors() -> int:
        gc.collect()
        with warnings.catch_warnings():  # isinstance() on some of torch's lazy module objects warns
            warnings.simplefilter("ignore")
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    def run(n: int) -> None:
        for _ in range(n):
            if env.step(env.action_space.sample())[3]:
                env.reset()

    run(30)  # warm-up: caches, optimizer state
    start = live_tensors()
    run(100)  # ten more episodes
    assert live_tensors() <= start + 2
