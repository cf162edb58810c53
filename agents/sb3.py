"""Stable-Baselines3 helpers: algorithms with settings that suit an env whose step trains a network, vector
envs (``DummyVecEnv``/``SubprocVecEnv``, optionally ``VecNormalize``), a callback that logs the privacy/utility
numbers of ``info`` (to tensorboard when the model has ``tensorboard_log``), and atomic saving."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from fr_models.trainer import CheckpointError, atomic_torch_save, atomic_write, load_checkpoint

__all__ = [
    "ALGORITHMS",
    "ALGO_DEFAULTS",
    "INFO_KEYS",
    "MixingStatsCallback",
    "PPO_DEFAULTS",
    "load_obs_normalizer",
    "load_vec_normalize",
    "make_agent",
    "make_ppo",
    "make_vec_env",
    "save_agent",
    "save_vec_normalize",
    "vecnormalize_path",
]

#: PPO settings for envs whose step is an FR update (SB3's n_steps=2048 would be one update per several minutes).
#: ``python examples/train_ppo.py`` (default env, 4000 steps, ``fr_loss``) prints how far they move the mean k;
#: measured: 3.79 in the first 10 % of steps, 6.00 in the last.
PPO_DEFAULTS: dict[str, Any] = {
    "n_steps": 64,
    "batch_size": 64,
    "n_epochs": 10,
    "learning_rate": 1e-3,
    "gamma": 0.9,
    "gae_lambda": 0.9,
    "ent_coef": 0.01,
    "policy_kwargs": {"net_arch": [64, 64]},
}

#: Default settings per algorithm name (``hyperparams/<algo>.yml`` gives the same for RL Zoo; a test keeps them equal).
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": PPO_DEFAULTS,
    "a2c": {
        "n_steps": 16,
        "learning_rate": 1e-3,
        "gamma": 0.9,
        "gae_lambda": 0.9,
        "ent_coef": 0.01,
        "policy_kwargs": {"net_arch": [64, 64]},
    },
    "sac": {
        "learning_starts": 200,
        "buffer_size": 20_000,
        "batch_size": 128,
        "train_freq": 1,
        "gradient_steps": 1,
        "learning_rate": 1e-3,
        "gamma": 0.9,
        "tau": 0.01,
        # SAC's entropy bonus on a tanh-squashed Gaussian is largest at the action 0, i.e. the midpoint k: with
        # SB3's initial coefficient 1.0 it outweighs a per-sample reward signal and the policy stays there (the
        # grid's SAC chose k = 4 for every face). Measured (tests/test_per_sample_policy.py's midpoint task, 600
        # steps, a reward falling with k): the deterministic action moved from 0 to -0.15 with "auto", to -0.84
        # with "auto_0.05" (the coefficient still tuned, from 0.05).
        "ent_coef": "auto_0.05",
        "policy_kwargs": {"net_arch": [64, 64]},
    },
}

#: ``make_agent(..., policy="per_sample")``: the shared per-sample policy of each algorithm (:mod:`agents.per_sample`).
PER_SAMPLE_POLICIES: dict[str, str] = {"ppo": "PerSamplePolicy", "a2c": "PerSamplePolicy", "sac": "PerSampleSACPolicy"}

#: The SB3 algorithm classes by name.
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "sac": SAC}

#: ``info`` entries collected by :class:`MixingStatsCallback`.
INFO_KEYS: tuple[str, ...] = ("k", "mixed_loss", "clean_loss", "accuracy")


def make_agent(
    algo: str, env: GymEnv, seed: int | None = None, device: str = "cpu", verbose: int = 0,
    policy: str | type = "MlpPolicy", **overrides: Any
) -> BaseAlgorithm:
    """An SB3 algorithm with :data:`ALGO_DEFAULTS`, any of which ``overrides`` replaces.

    :param algo: ``"ppo"``, ``"a2c"`` or ``"sac"`` (SAC needs a continuous env id).
    :param env: a Gymnasium env or SB3 VecEnv.
    :param seed: seed of the agent.
    :param device: torch device of the policy.
    :param verbose: SB3 verbosity.
    :param policy: SB3's policy (a name or class); ``"per_sample"``: the network shared across the batch's
        samples (:data:`PER_SAMPLE_POLICIES`; per-sample env ids only; ``net_arch`` is dropped, it has none).
    :param overrides: further arguments (``n_steps``, ``tensorboard_log``, ...).
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}; accepted: {', '.join(ALGORITHMS)}")
    if algo == "sac" and not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(
            f"SAC needs a continuous (Box) action space, the env has {env.action_space}; use "
            "mixup_env/FrequencyMixupContinuous-v0 or mixup_env/FrequencyMixupPerSampleContinuous-v0"
        )
    kwargs = {**ALGO_DEFAULTS[algo], **overrides}
    if policy == "per_sample":
        from agents import per_sample

        policy = getattr(per_sample, PER_SAMPLE_POLICIES[algo])
        kwargs["policy_kwargs"] = {k: v for k, v in kwargs.get("policy_kwargs", {}).items() if k != "net_arch"}
    return ALGORITHMS[algo](policy, env, seed=seed, device=device, verbose=verbose, **kwargs)


def make_ppo(env: GymEnv, seed: int | None = None, device: str = "cpu", verbose: int = 0, **overrides: Any) -> PPO:
    """``make_agent("ppo", ...)``: an SB3 PPO with :data:`PPO_DEFAULTS`."""
    return make_agent("ppo", env, seed=seed, device=device, verbose=verbose, **overrides)  # type: ignore[return-value]


def _make_env(env_id: str, env_kwargs: Mapping[str, Any], torch_threads: int | None) -> gym.Env[Any, Any]:
    """Build one monitored env (a module-level function, so SubprocVecEnv can pickle it)."""
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    import mixup_env  # noqa: F401  (registers the ids in a fresh worker process)

    return Monitor(gym.make(env_id, **env_kwargs))


def make_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    vec_env: str = "dummy",
    normalize: bool = False,
    gamma: float = 0.99,
) -> VecEnv:
    """A seeded SB3 vector env of ``n_envs`` copies.

    :param env_id: a registered id.
    :param n_envs: number of envs (>= 1).
    :param seed: env ``i`` is seeded with ``seed + i``.
    :param env_kwargs: arguments of ``gymnasium.make``.
    :param vec_env: ``"dummy"`` (one process) or ``"subproc"`` (one process per env, started with ``spawn``;
        each worker uses one torch thread so they do not fight over the cores).
    :param normalize: wrap in ``VecNormalize`` (running normalisation of observations and rewards; the FR
        loss drifts down during an episode, which it evens out). Save its statistics with the model.
    :param gamma: the agent's discount, used by ``VecNormalize`` for the reward scale.
    """
    if not isinstance(n_envs, (int, np.integer)) or isinstance(n_envs, bool) or n_envs < 1:
        raise ValueError(f"n_envs={n_envs!r} is invalid: accepted an integer >= 1")
    if vec_env not in ("dummy", "subproc"):
        raise ValueError(f"unknown vec_env {vec_env!r}; accepted: dummy, subproc")
    kwargs = dict(env_kwargs or {})
    threads = 1 if vec_env == "subproc" else None
    fns = [functools.partial(_make_env, env_id, kwargs, threads) for _ in range(n_envs)]
    venv: VecEnv = SubprocVecEnv(fns, start_method="spawn") if vec_env == "subproc" else DummyVecEnv(fns)
    venv.seed(seed)
    if normalize:
        venv = VecNormalize(venv, gamma=gamma)
    return venv


class MixingStatsCallback(BaseCallback):
    """Collects ``k``, the mixed and clean losses and the accuracy from every step's ``info``, and logs their
    means under ``mixup/`` at each rollout end (shown by tensorboard when the model has ``tensorboard_log``).

    :ivar history: per key, every value seen, in order (all envs of a VecEnv interleaved).
    :ivar rewards: every reward seen (as the env gave it, before any ``VecNormalize``).
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.history: dict[str, list[float]] = {k: [] for k in INFO_KEYS}
        self.rewards: list[float] = []
        self._rollout_start: int = 0

    def _on_rollout_start(self) -> None:
        self._rollout_start = len(self.rewards)

    def _on_step(self) -> bool:
        vec = self.model.get_env() if self.model is not None else None
        raw = vec.get_original_reward() if isinstance(vec, VecNormalize) else self.locals.get("rewards", [])
        for info in self.locals.get("infos", []):
            for key in INFO_KEYS:
                if key in info:
                    self.history[key].append(float(info[key]))
        self.rewards.extend(float(r) for r in np.asarray(raw).reshape(-1))
        return True

    def _on_rollout_end(self) -> None:
        n = len(self.rewards) - self._rollout_start
        if n <= 0:
            return
        for key, values in self.history.items():
            if values:
                self.logger.record(f"mixup/{key}", float(np.mean(values[-n:])))
        self.logger.record("mixup/reward", float(np.mean(self.rewards[-n:])))


def save_agent(model: BaseAlgorithm, path: str | Path) -> Path:
    """Save an SB3 model atomically (and its ``VecNormalize`` statistics, if any, beside it as
    ``<name>.vecnormalize.pt``, tensors only: see :func:`load_vec_normalize`), through
    :func:`fr_models.trainer.atomic_write`.

    :param model: an SB3 algorithm.
    :param path: destination, ending in ``.zip`` (added if missing).
    :return: the path of the model.
    """
    p = Path(path)
    if p.suffix != ".zip":
        p = p.with_name(p.name + ".zip")
    atomic_write(p, model.save)
    vec = model.get_vec_normalize_env()
    if vec is not None:
        save_vec_normalize(vec, vecnormalize_path(p))
    return p


def vecnormalize_path(model_path: str | Path) -> Path:
    """Where :func:`save_agent` puts the ``VecNormalize`` statistics of a model saved at ``model_path``."""
    p = Path(model_path)
    return p.with_name(f"{p.stem}.vecnormalize.pt")


def load_obs_normalizer(model_path: str | Path, env: gym.Env[Any, Any]) -> Callable[[np.ndarray], np.ndarray] | None:
    """The observation normalisation an SB3 model saved by :func:`save_agent` was trained with: the frozen
    ``normalize_obs`` of its ``VecNormalize`` statistics, for running the model on a plain env (e.g. with
    :func:`agents.run_episode`'s ``normalize_obs``); ``None`` when the model was trained without normalised
    observations (no statistics file beside it, or one with ``norm_obs=False``).

    :param model_path: the model's path, as given to :func:`save_agent`.
    :param env: an env with the observation space the model was trained on (not stepped).
    """
    stats = vecnormalize_path(model_path)
    if not stats.is_file():
        return None
    vec = load_vec_normalize(stats, DummyVecEnv([lambda: env]))
    vec.training = False
    return vec.normalize_obs if vec.norm_obs else None


_VECNORM_FLOATS = ("clip_obs", "clip_reward", "gamma", "epsilon")


def save_vec_normalize(vec: VecNormalize, path: str | Path) -> Path:
    """Write a ``VecNormalize``'s statistics and settings atomically as tensors and plain values (SB3's own
    ``save`` pickles the whole wrapper, and loading a pickle can run code)."""
    if isinstance(vec.obs_rms, dict):
        raise ValueError("dict observation spaces are not supported here: save the VecNormalize with SB3's save()")
    rms = {"obs": vec.obs_rms, "ret": vec.ret_rms}
    state: dict[str, Any] = {"kind": "vecnormalize", "norm_obs": bool(vec.norm_obs),
                             "norm_reward": bool(vec.norm_reward),
                             **{k: float(getattr(vec, k)) for k in _VECNORM_FLOATS}}
    for name, r in rms.items():
        state[f"{name}_mean"] = torch.as_tensor(np.asarray(r.mean, dtype=np.float64))
        state[f"{name}_var"] = torch.as_tensor(np.asarray(r.var, dtype=np.float64))
        state[f"{name}_count"] = float(r.count)
    return atomic_torch_save(state, path)


def load_vec_normalize(path: str | Path, venv: VecEnv) -> VecNormalize:
    """Wrap ``venv`` in a ``VecNormalize`` with the statistics :func:`save_vec_normalize` wrote (loaded with
    ``torch.load(weights_only=True)``: a file that holds anything but tensors and plain values is refused)."""
    state = load_checkpoint(path, "VecNormalize statistics file (written by save_agent)", ("kind", "obs_mean"))
    if state["kind"] != "vecnormalize":
        raise CheckpointError(f"{str(path)!r} is not a VecNormalize statistics file (its kind is {state['kind']!r})")
    vec = VecNormalize(venv, norm_obs=state["norm_obs"], norm_reward=state["norm_reward"],
                       **{k: state[k] for k in _VECNORM_FLOATS})
    for name, r in (("obs", vec.obs_rms), ("ret", vec.ret_rms)):
        mean = state[f"{name}_mean"].numpy()
        if np.shape(r.mean) != mean.shape:
            raise ValueError(f"{str(path)!r} holds {name} statistics of shape {mean.shape}; this env's are "
                             f"{np.shape(r.mean)}: it was saved for another env configuration")
        r.mean, r.var, r.count = mean, state[f"{name}_var"].numpy(), state[f"{name}_count"]
    return vec
