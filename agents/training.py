"""Train an SB3 agent on a mixup_env id, let it train one FR model, save both: what ``examples/train_ppo.py``
and ``examples/train_sac.py`` run. A run is a :class:`TrainingSpec`; :func:`training_parser` is its command line.

>>> TrainingSpec(algo="sac", env_id="mixup_env/FrequencyMixup-v0")
Traceback (most recent call last):
...
ValueError: SAC needs a continuous env id, got mixup_env/FrequencyMixup-v0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecNormalize

import mixup_env  # noqa: F401  (registers the env ids)
from fr_models.trainer import atomic_write
from agents.evaluation import run_episode
from agents.sb3 import (
    ALGO_DEFAULTS,
    ALGORITHMS,
    MixingStatsCallback,
    load_vec_normalize,
    make_agent,
    make_vec_env,
    save_agent,
    vecnormalize_path,
)

__all__ = ["TrainingSpec", "parse_training_args", "train_and_evaluate", "training_parser"]


@dataclass(frozen=True)
class TrainingSpec:
    """One agent training run and the FR training episode under the trained agent.

    :param algo: an SB3 algorithm (:data:`agents.ALGORITHMS`).
    :param env_id: a registered env id.
    :param timesteps: environment steps (= FR updates); 0: evaluate only.
    :param episode_steps: FR updates per episode (one FR training run).
    :param batch_size: faces per FR update.
    :param seed: the agent's and the envs' seed.
    :param data: ``"synthetic"``, a ``.npz`` path, or a data set name under ``$MIXUP_ENV_DATA``.
    :param image_size: resize faces to this size.
    :param reward: a registered reward name.
    :param reward_kwargs: the reward's options.
    :param control_alpha: continuous ids: the action also sets the mixing concentration.
    :param dither: continuous ids: round each action to k at random, up or down, so the expected k follows it
        (the env's ``continuous_rounding="dither"``; a reward that changes smoothly with the action).
    :param n_envs: parallel envs.
    :param vec_env: ``"dummy"`` or ``"subproc"``.
    :param normalize: ``VecNormalize`` observations and rewards.
    :param tensorboard: tensorboard log folder.
    :param load: continue from a saved agent (``.zip``).
    :param out: the output folder (``None``: ``runs/<algo>``, so two algorithms' runs never overwrite each other).
    :param device: torch device of the FR model and the policy.
    :param progress: show the progress bar.
    :raises ValueError: a setting the training cannot use, named.
    """

    algo: str = "ppo"
    env_id: str = "mixup_env/FrequencyMixup-v0"
    timesteps: int = 4000
    episode_steps: int = 200
    batch_size: int = 64
    seed: int = 0
    data: str = "synthetic"
    image_size: int | None = None
    reward: str = "fr_loss"
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    control_alpha: bool = False
    dither: bool = False
    n_envs: int = 1
    vec_env: str = "dummy"
    normalize: bool = False
    tensorboard: Path | None = None
    load: Path | None = None
    out: Path | None = None
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"unknown algo {self.algo!r}; accepted: {', '.join(ALGORITHMS)}")
        if self.env_id not in mixup_env.ENV_IDS:
            raise ValueError(f"unknown env id {self.env_id!r}; accepted: {', '.join(mixup_env.ENV_IDS)}")
        if self.timesteps < 0 or self.episode_steps < 1 or self.n_envs < 1:
            raise ValueError("--timesteps must be >= 0, --episode-steps and --n-envs >= 1")
        if self.algo == "sac" and mixup_env.ENV_IDS[self.env_id] not in ("batch_continuous", "sample_continuous"):
            raise ValueError(f"SAC needs a continuous env id, got {self.env_id}")
        if self.dither and mixup_env.ENV_IDS[self.env_id] not in ("batch_continuous", "sample_continuous"):
            raise ValueError(f"--dither needs a continuous env id, got {self.env_id}")
        if self.out is None:
            object.__setattr__(self, "out", Path("runs") / self.algo)

    def env_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of every env of the run."""
        kwargs: dict[str, Any] = dict(data=self.data, image_size=self.image_size, episode_steps=self.episode_steps,
                                      batch_size=self.batch_size, reward=self.reward,
                                      reward_kwargs=dict(self.reward_kwargs), device=self.device)
        if self.control_alpha:
            kwargs["control_alpha"] = True
        if self.dither:
            kwargs["continuous_rounding"] = "dither"
        return kwargs


def training_parser(description: str, algo: str, env_id: str, algos: tuple[str, ...]) -> argparse.ArgumentParser:
    """The command line of the training examples, with their defaults."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--algo", default=algo, choices=algos, help="SB3 algorithm")
    p.add_argument("--env-id", default=env_id, choices=list(mixup_env.ENV_IDS), help="registered env id")
    p.add_argument("--timesteps", type=int, default=4000, help="environment steps (= FR updates); 0: evaluate only")
    p.add_argument("--episode-steps", type=int, default=200, help="FR updates per episode (one FR training run)")
    p.add_argument("--batch-size", type=int, default=64, help="faces per FR update")
    p.add_argument("--seed", type=int, default=0, help="seed of the agent and the envs")
    p.add_argument("--data", default="synthetic", help="'synthetic', a .npz path, or a data set name under $MIXUP_ENV_DATA")
    p.add_argument("--image-size", type=int, default=None, help="resize faces to this size (a multiple of 8)")
    p.add_argument("--reward", default="fr_loss", help="a registered reward name")
    p.add_argument("--reward-kwargs", type=json.loads, default={}, help="reward options as JSON, e.g. '{\"floor\": 0.7}'")
    p.add_argument("--control-alpha", action="store_true", help="continuous ids: the action also sets the mixing concentration")
    p.add_argument("--dither", action="store_true", help="continuous ids: round actions to k at random so that the "
                   "expected k follows the action (no flat steps around each k)")
    p.add_argument("--n-envs", type=int, default=1, help="parallel envs")
    p.add_argument("--vec-env", default="dummy", choices=["dummy", "subproc"], help="SB3 vector env class")
    p.add_argument("--normalize", action="store_true", help="VecNormalize observations and rewards")
    p.add_argument("--tensorboard", type=Path, default=None, help="tensorboard log folder")
    p.add_argument("--load", type=Path, default=None, help="continue from a saved agent (.zip)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<algo>, so runs of two "
                   "algorithms never overwrite each other)")
    p.add_argument("--device", default="cpu", help="torch device of the FR model and the policy")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def parse_training_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> TrainingSpec:
    """The run the command line asks for; bad arguments end with the parser's usage error."""
    args = vars(parser.parse_args(argv))
    args["progress"] = not args.pop("no_progress")
    try:
        return TrainingSpec(**args)
    except ValueError as e:
        parser.error(str(e))
        raise  # unreachable: parser.error exits


def _agent(spec: TrainingSpec, venv: Any) -> Any:
    """The run's agent: loaded from ``spec.load`` (with its observation statistics), or new with the settings of
    :data:`agents.sb3.ALGO_DEFAULTS` fitted to a short run."""
    if spec.load is not None:
        return ALGORITHMS[spec.algo].load(spec.load, env=venv, device=spec.device)
    overrides: dict[str, Any] = {"tensorboard_log": str(spec.tensorboard) if spec.tensorboard else None}
    if spec.algo in ("ppo", "a2c"):
        n_steps = ALGO_DEFAULTS[spec.algo]["n_steps"]
        overrides["n_steps"] = max(1, min(n_steps, spec.timesteps // spec.n_envs or 1))
        if spec.algo == "ppo":
            overrides["batch_size"] = min(ALGO_DEFAULTS["ppo"]["batch_size"], overrides["n_steps"] * spec.n_envs)
    if spec.algo == "sac":
        overrides["learning_starts"] = min(ALGO_DEFAULTS["sac"]["learning_starts"], max(spec.timesteps // 4, 1))
    return make_agent(spec.algo, venv, seed=spec.seed, device=spec.device, **overrides)


def train_and_evaluate(spec: TrainingSpec) -> dict[str, Any]:
    """Train (or load) an agent, then run one FR training episode under it; save agent and FR model.

    :return: the summary printed and written to ``<out>/summary.json``.
    """
    assert spec.out is not None  # set by TrainingSpec
    env_kwargs = spec.env_kwargs()
    gamma = ALGO_DEFAULTS[spec.algo].get("gamma", 0.99)
    venv = make_vec_env(spec.env_id, spec.n_envs, spec.seed, env_kwargs, spec.vec_env, spec.normalize, gamma)
    try:
        if spec.load is not None and spec.normalize and vecnormalize_path(spec.load).is_file():
            base = venv.venv if isinstance(venv, VecNormalize) else venv
            venv = load_vec_normalize(vecnormalize_path(spec.load), base)
        model = _agent(spec, venv)
        stats_cb = MixingStatsCallback()
        rollout = int(getattr(model, "n_steps", 1)) * int(model.n_envs)
        if spec.timesteps and spec.timesteps % rollout:
            # PPO and A2C collect whole rollouts of n_steps x n_envs env steps before each update
            runs = -(-spec.timesteps // rollout) * rollout
            print(f"note: {spec.algo} collects rollouts of {rollout} env steps (n_steps x n_envs): --timesteps "
                  f"{spec.timesteps} runs {runs} steps", file=sys.stderr)
        t0 = time.perf_counter()
        if spec.timesteps:
            model.learn(total_timesteps=spec.timesteps, callback=stats_cb, progress_bar=spec.progress,
                        reset_num_timesteps=spec.load is None)
        train_s = time.perf_counter() - t0

        # One FR training run under the learned strategy: this FR model is the result (the training envs'
        # own FR models were discarded by the automatic reset at each episode's end).
        normalize_obs = None
        if isinstance(venv, VecNormalize):
            venv.training = False
            normalize_obs = venv.normalize_obs
        eval_env = gym.make(spec.env_id, **env_kwargs)
        episode = run_episode(model, eval_env, seed=spec.seed + 10_000, normalize_obs=normalize_obs)

        spec.out.mkdir(parents=True, exist_ok=True)
        agent_path = save_agent(model, spec.out / f"{spec.algo}_agent.zip")
        fr_path = eval_env.unwrapped.save_fr_model(spec.out / "fr_model.pt")
    finally:
        venv.close()
    k_train = np.asarray(stats_cb.history["k"] or [np.nan])
    tenth = max(1, len(k_train) // 10)
    trained = int(len(stats_cb.rewards))
    summary: dict[str, Any] = {
        "algo": spec.algo,
        "env_id": spec.env_id,
        "reward": spec.reward,
        "timesteps": trained,
        "timesteps_requested": int(spec.timesteps),
        "train_seconds": round(train_s, 1),
        "steps_per_second": round(trained / train_s, 1) if trained else None,
        "mean_k_first_10pct": round(float(k_train[:tenth].mean()), 3),
        "mean_k_last_10pct": round(float(k_train[-tenth:].mean()), 3),
        "mean_reward": round(float(np.mean(stats_cb.rewards)), 4) if trained else None,
        "final_episode_mean_k": round(episode.mean_k, 3),
        "final_episode_mean_reward": round(episode.mean_reward, 4),
        "final_clean_accuracy": round(episode.final_accuracy, 4),
        "chance_accuracy": round(1.0 / eval_env.unwrapped.num_classes, 4),
    }
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(spec).items()}
    record = {**summary, "agent": str(agent_path), "fr_model": str(fr_path), "args": settings}
    atomic_write(spec.out / "summary.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
    print("\n".join(f"{k:>26}: {v}" for k, v in summary.items()))
    print(f"{'saved':>26}: {agent_path}, {fr_path}")
    return summary
