"""Train an SB3 PPO mixing strategy on mixup-env, then let it train one FR model and save both.

    python examples/train_ppo.py                      # built-in synthetic faces, about 2 minutes on 2 CPU cores
    python examples/train_ppo.py --data lfw --image-size 64 --timesteps 20000   # real faces ($MIXUP_ENV_DATA/lfw)

Prints a summary: training speed, the k the agent chose (early vs late in training, and in the final episode),
the mean reward, and the clean identification accuracy of the FR model trained under the learned strategy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import mixup_env  # noqa: F401  (registers the env ids)
from agents import MixingStatsCallback, make_ppo, save_agent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env-id", default="mixup_env/FrequencyMixup-v0", help="registered env id")
    p.add_argument("--timesteps", type=int, default=4000, help="PPO environment steps (= FR updates)")
    p.add_argument("--episode-steps", type=int, default=200, help="FR updates per episode (one FR training run)")
    p.add_argument("--batch-size", type=int, default=64, help="faces per FR update")
    p.add_argument("--seed", type=int, default=0, help="seed of the agent and the env")
    p.add_argument("--data", default="synthetic", help="'synthetic', a .npz path, or a data set name under $MIXUP_ENV_DATA")
    p.add_argument("--image-size", type=int, default=None, help="resize faces to this size (a multiple of 8)")
    p.add_argument("--reward", default="fr_loss", help="a registered reward name")
    p.add_argument("--out", type=Path, default=Path("runs/ppo"), help="output folder")
    p.add_argument("--device", default="cpu", help="torch device of the FR model and the policy")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    if args.timesteps < 1 or args.episode_steps < 1:
        p.error("--timesteps and --episode-steps must be positive")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    env_kwargs = dict(
        data=args.data, image_size=args.image_size, episode_steps=args.episode_steps, batch_size=args.batch_size,
        reward=args.reward, device=args.device,
    )
    env = gym.make(args.env_id, **env_kwargs)
    env.reset(seed=args.seed)
    model = make_ppo(env, seed=args.seed, device=args.device, n_steps=min(64, args.timesteps))
    stats = MixingStatsCallback()
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.timesteps, callback=stats, progress_bar=not args.no_progress)
    train_s = time.perf_counter() - t0

    # One FR training run under the learned strategy: this FR model is the result (the training env's own
    # FR model was discarded by the automatic reset at its last episode's end).
    eval_env = gym.make(args.env_id, **env_kwargs)
    obs, info = eval_env.reset(seed=args.seed + 1)
    ks, done = [], False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, terminated, truncated, info = eval_env.step(action)
        ks.append(info["k"])
        done = terminated or truncated

    args.out.mkdir(parents=True, exist_ok=True)
    agent_path = save_agent(model, args.out / "ppo_agent.zip")
    fr_path = eval_env.unwrapped.save_fr_model(args.out / "fr_model.pt")
    k_train = np.asarray(stats.history["k"])
    tenth = max(1, len(k_train) // 10)
    summary = {
        "timesteps": int(model.num_timesteps),
        "train_seconds": round(train_s, 1),
        "steps_per_second": round(model.num_timesteps / train_s, 1),
        "mean_k_first_10pct": round(float(k_train[:tenth].mean()), 3),
        "mean_k_last_10pct": round(float(k_train[-tenth:].mean()), 3),
        "mean_reward": round(float(np.mean(stats.rewards)), 4),
        "final_episode_mean_k": round(float(np.mean(ks)), 3),
        "final_clean_accuracy": round(float(info["accuracy"]), 4),
        "chance_accuracy": round(1.0 / eval_env.unwrapped.num_classes, 4),
    }
    (args.out / "summary.json").write_text(json.dumps({**summary, "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    print("\n".join(f"{k:>22}: {v}" for k, v in summary.items()))
    print(f"{'saved':>22}: {agent_path}, {fr_path}")
    return summary


if __name__ == "__main__":
    main()
