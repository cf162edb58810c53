"""RL Zoo (rl_zoo3) compatibility: the yaml files of ``hyperparams/`` parse, name registered env ids, and each section
builds and trains the SB3 algorithm it is meant for; ``--gym-packages mixup_env`` registers the envs.

rl_zoo3 itself is not needed: its preprocessing of a section (``ExperimentManager._preprocess_hyperparams``) is
mirrored by :func:`zoo_translate`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import yaml  # noqa: E402  (PyYAML, in the test extra: RL Zoo reads its config files with yaml.safe_load)

import mixup_env  # noqa: E402  (registers the env ids)
from stable_baselines3 import A2C, PPO, SAC  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HYPERPARAMS = ROOT / "hyperparams"
ALGOS = {"ppo": PPO, "a2c": A2C, "sac": SAC}

#: The sections each file must have.
REQUIRED_IDS: dict[str, set[str]] = {
    "ppo": set(mixup_env.ENV_IDS),
    "a2c": {"mixup_env/FrequencyMixup-v0", "mixup_env/FrequencyMixupPerSampleContinuous-v0"},
    "sac": {"mixup_env/FrequencyMixupContinuous-v0", "mixup_env/FrequencyMixupPerSampleContinuous-v0"},
}

#: Keys RL Zoo consumes itself (it deletes them before passing the rest to the algorithm).
ZOO_KEYS = (
    "n_timesteps",
    "n_envs",
    "normalize",
    "env_kwargs",
    "monitor_kwargs",
    "frame_stack",
    "env_wrapper",
    "vec_env_wrapper",
    "callback",
    "noise_type",
    "noise_std",
)

#: Keys whose string value RL Zoo evaluates as Python.
EVALUATED_KEYS = ("policy_kwargs", "replay_buffer_class", "replay_buffer_kwargs")

#: A small, fast env: 16-image batches, a narrow backbone, short episodes.
TINY = {"batch_size": 16, "episode_steps": 8, "recipe": "tiny"}


def load(algo: str) -> dict[str, dict[str, Any]]:
    with open(HYPERPARAMS / f"{algo}.yml") as f:
        return yaml.safe_load(f)


def zoo_translate(section: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Split a yaml section as RL Zoo does: (policy, algorithm kwargs, the keys RL Zoo keeps for itself).

    String ``policy_kwargs`` are evaluated in a namespace holding only ``dict``; a list ``train_freq`` becomes a tuple.
    """
    kwargs = dict(section)
    policy = kwargs.pop("policy")
    zoo = {key: kwargs.pop(key) for key in ZOO_KEYS if key in kwargs}
    for key in EVALUATED_KEYS:
        if isinstance(kwargs.get(key), str):
            kwargs[key] = eval(kwargs[key], {"__builtins__": {}}, {"dict": dict})  # noqa: S307
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    return policy, kwargs, zoo


SECTIONS = [(algo, env_id) for algo in ALGOS for env_id in REQUIRED_IDS[algo]]


@pytest.mark.parametrize("algo", list(ALGOS))
def test_yaml_parses_and_names_registered_ids(algo: str) -> None:
    hp = load(algo)
    assert isinstance(hp, dict)
    assert set(hp) <= set(mixup_env.ENV_IDS), f"unknown env ids in {algo}.yml: {set(hp) - set(mixup_env.ENV_IDS)}"
    assert set(hp) >= REQUIRED_IDS[algo], f"missing sections in {algo}.yml: {REQUIRED_IDS[algo] - set(hp)}"
    for env_id, section in hp.items():
        assert env_id in gym.registry
        assert section["policy"] == "MlpPolicy"
        assert isinstance(section["n_timesteps"], int) and 0 < section["n_timesteps"] <= 50_000
        # PyYAML reads "1e-3" as a string: numbers must be written so that they parse as numbers
        assert isinstance(section["learning_rate"], float)
        assert isinstance(section["gamma"], float)
        if algo == "sac":
            assert mixup_env.ENV_IDS[env_id].endswith("continuous"), "SAC needs a Box action space"


def test_gym_packages_registers_envs(tmp_path: Path) -> None:
    """What ``--gym-packages mixup_env`` does: import the package by name in a fresh interpreter, then make each id."""
    script = f"""
import importlib
import gymnasium
assert not any(k.startswith("mixup_env/") for k in gymnasium.registry), "registered before the import"
importlib.import_module("mixup_env")
for env_id in {sorted(mixup_env.ENV_IDS)!r}:
    env = gymnasium.make(env_id, **{TINY!r})
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.step(env.action_space.sample())
    env.close()
    print("ok", env_id)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("ok ") == len(mixup_env.ENV_IDS)


@pytest.mark.parametrize(("algo", "env_id"), SECTIONS, ids=[f"{a}-{e.split('/')[1]}" for a, e in SECTIONS])
def test_section_builds_and_learns(algo: str, env_id: str) -> None:
    policy, kwargs, zoo = zoo_translate(load(algo)[env_id])
    assert zoo.get("normalize", False) is False
    assert zoo.get("n_envs", 1) == 1

    # shrink only what sets the length of the run
    overrides: dict[str, Any] = {}
    if algo == "ppo":
        overrides = {"n_steps": 16, "batch_size": 16}
    elif algo == "a2c":
        overrides = {"n_steps": 8}
    elif algo == "sac":
        overrides = {"learning_starts": 8}
    env = gym.make(env_id, **TINY, **zoo.get("env_kwargs", {}))
    model = ALGOS[algo](policy, env, seed=0, device="cpu", **{**kwargs, **overrides})

    for key, value in kwargs.items():
        if key in overrides:
            continue
        attr = getattr(model, key)
        if key == "train_freq":
            expected = value if isinstance(value, tuple) else (value, "step")
            assert (attr.frequency, attr.unit.value) == expected
        elif key == "policy_kwargs":
            assert value.items() <= attr.items()
        else:
            assert attr == value, f"{key}: model has {attr!r}, yaml {value!r}"
    assert isinstance(model.policy, model.policy_aliases[policy])

    model.learn(32)
    assert model.num_timesteps >= 32
    env.close()


@pytest.mark.parametrize("algo,env_id", [("ppo", "mixup_env/FrequencyMixup-v0"), ("a2c", "mixup_env/FrequencyMixup-v0"),
                                         ("sac", "mixup_env/FrequencyMixupContinuous-v0")])
def test_yaml_agrees_with_the_library_defaults(algo: str, env_id: str) -> None:
    """hyperparams/<algo>.yml and agents.sb3.ALGO_DEFAULTS describe the same settings: one must not drift."""
    from agents.sb3 import ALGO_DEFAULTS


    section = dict(yaml.safe_load((ROOT / "hyperparams" / f"{algo}.yml").read_text())[env_id])
    section["policy_kwargs"] = eval(section["policy_kwargs"], {"__builtins__": {}}, {"dict": dict})
    for key, value in ALGO_DEFAULTS[algo].items():
        assert section.get(key) == value, (algo, key, section.get(key), value)
