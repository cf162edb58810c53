"""Train an SB3 agent on a mixup_env id, let it train one FR model, save both: what ``examples/train_ppo.py``
and ``examples/train_sac.py`` run."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecNormalize

import mixup_env  # noqa: F401  (registers the env ids)
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

__all__ = ["check_training_args", "parse_training_args", "train_and_evaluate", "training_parser"]


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


def check_training_args(args: argparse.Namespace) -> None:
    """Reject arguments the training cannot use, naming them (``ValueError``)."""
    if args.timesteps < 0 or args.episode_steps < 1 or args.n_envs < 1:
        raise ValueError("--timesteps must be >= 0, --episode-steps and --n-envs >= 1")
    if args.algo == "sac" and mixup_env.ENV_IDS[args.env_id] not in ("batch_continuous", "sample_continuous"):
        raise ValueError(f"SAC needs a continuous env id, got {args.env_id}")


def parse_training_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check (see :func:`check_training_args`); bad arguments end with the parser's usage error."""
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("runs") / args.algo
    try:
        check_training_args(args)
    except ValueError as e:
        parser.error(str(e))
    return args


def train_and_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or load) an agent, then run one FR training episode under it; save agent and FR model.

    :return: the summary printed and written to ``<out>/summary.json``.
    """
    check_training_args(args)
    if getattr(args, "out", None) is None:
        args.out = Path("runs") / args.algo
    env_kwargs: dict[str, Any] = dict(
        data=args.data, image_size=args.image_size, episode_steps=args.episode_steps, batch_size=args.batch_size,
        reward=args.reward, reward_kwargs=args.reward_kwargs, device=args.device,
    )
    if args.control_alpha:
        env_kwargs["control_alpha"] = True
    gamma = ALGO_DEFAULTS[args.algo].get("gamma", 0.99)
    venv = make_vec_env(args.env_id, args.n_envs, args.seed, env_kwargs, args.vec_env, args.normalize, gamma)
    try:
        if args.load is not None:
            stats = vecnormalize_path(args.load)
            if args.normalize and stats.is_file():
                venv = load_vec_normalize(stats, venv.venv if isinstance(venv, VecNormalize) else venv)
            model = ALGORITHMS[args.algo].load(args.load, env=venv, device=args.device)
        else:
            overrides: dict[str, Any] = {"tensorboard_log": str(args.tensorboard) if args.tensorboard else None}
            if args.algo in ("ppo", "a2c"):
                n_steps = ALGO_DEFAULTS[args.algo]["n_steps"]
                overrides["n_steps"] = max(1, min(n_steps, args.timesteps // args.n_envs or 1))
                if args.algo == "ppo":
                    overrides["batch_size"] = min(ALGO_DEFAULTS["ppo"]["batch_size"], overrides["n_steps"] * args.n_envs)
            if args.algo == "sac":
                overrides["learning_starts"] = min(ALGO_DEFAULTS["sac"]["learning_starts"], max(args.timesteps // 4, 1))
            model = make_agent(args.algo, venv, seed=args.seed, device=args.device, **overrides)
        stats_cb = MixingStatsCallback()
        rollout = int(getattr(model, "n_steps", 1)) * int(model.n_envs)
        if args.timesteps and args.timesteps % rollout:
            # PPO and A2C collect whole rollouts of n_steps x n_envs env steps before each update
            runs = -(-args.timesteps // rollout) * rollout
            print(f"note: {args.algo} collects rollouts of {rollout} env steps (n_steps x n_envs): --timesteps "
                  f"{args.timesteps} runs {runs} steps", file=sys.stderr)
        t0 = time.perf_counter()
        if args.timesteps:
            model.learn(total_timesteps=args.timesteps, callback=stats_cb, progress_bar=not args.no_progress,
                        reset_num_timesteps=args.load is None)
        train_s = time.perf_counter() - t0

        # One FR training run under the learned strategy: this FR model is the result (the training envs'
        # own FR models were discarded by the automatic reset at each episode's end).
        normalize_obs = None
        if isinstance(venv, VecNormalize):
            venv.training = False
            normalize_obs = venv.normalize_obs
        eval_env = gym.make(args.env_id, **env_kwargs)
        episode = run_episode(model, eval_env, seed=args.seed + 10_000, normalize_obs=normalize_obs)

        args.out.mkdir(parents=True, exist_ok=True)
        agent_path = save_agent(model, args.out / f"{args.algo}_agent.zip")
        fr_path = eval_env.unwrapped.save_fr_model(args.out / "fr_model.pt")
    finally:
        venv.close()
    k_train = np.asarray(stats_cb.history["k"] or [np.nan])
    tenth = max(1, len(k_train) // 10)
    trained = int(len(stats_cb.rewards))
    summary: dict[str, Any] = {
        "algo": args.algo,
        "env_id": args.env_id,
        "reward": args.reward,
        "timesteps": trained,
        "timesteps_requested": int(args.timesteps),
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
    record = {**summary, "agent": str(agent_path), "fr_model": str(fr_path),
              "args": {k: (v if isinstance(v, (int, float, str, bool, dict, type(None))) else str(v)) for k, v in vars(args).items()}}
    (args.out / "summary.json").write_text(json.dumps(record, indent=2))
    print("\n".join(f"{k:>26}: {v}" for k, v in summary.items()))
    print(f"{'saved':>26}: {agent_path}, {fr_path}")
    return summary
