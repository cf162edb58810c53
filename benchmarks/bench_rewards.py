"""What each fixed k earns under the rewards, and what an adaptive strategy could gain: the figures behind the
``utility_aware`` reward's design.

    python benchmarks/bench_rewards.py                    # default env, 2 seeds x 200 steps per k, ~1 minute

For every k, runs fixed-k episodes and prints the mean mixed loss, the mean learning progress of a step
(clean loss before minus after the update, same batch), the final accuracy, and the mean ``utility_aware``
reward; then the best k per quarter of the episode and the reward of choosing the best k at every step (an
oracle over the per-step averages across seeds), against the best fixed k.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import mixup_env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--episode-steps", type=int, default=200)
    p.add_argument("--floor", type=float, default=mixup_env.UtilityAware().floor)
    args = p.parse_args()
    env = gym.make("mixup_env/FrequencyMixup-v0", episode_steps=args.episode_steps, reward="utility_aware",
                   reward_kwargs={"floor": args.floor}, measure_all=True)
    base = env.unwrapped
    rewards = {}
    print(f"{'k':>3} {'mixed loss':>10} {'progress':>9} {'final acc':>9} {'utility_aware':>13}")
    for action, k in enumerate(base.k_values):
        mixed, progress, acc, rew = [], [], [], []
        for seed in args.seeds:
            env.reset(seed=seed)
            for _ in range(args.episode_steps):
                _, r, _, _, info = env.step(action)
                mixed.append(info["mixed_loss"])
                progress.append(info["clean_loss"] - info["clean_loss_after"])
                rew.append(r)
            acc.append(info["accuracy"])
        rewards[k] = np.asarray(rew).reshape(len(args.seeds), -1).mean(0)  # per step, averaged over seeds
        print(f"{k:>3} {np.mean(mixed):10.3f} {np.mean(progress):9.4f} {np.mean(acc):9.3f} {np.mean(rew):13.4f}")
    table = np.stack([rewards[k] for k in base.k_values])
    q = args.episode_steps // 4
    best_q = [base.k_values[int(np.argmax(table[:, i * q : (i + 1) * q].mean(1)))] for i in range(4)]
    best_fixed = max(rewards, key=lambda k: rewards[k].mean())
    print(f"best fixed k: {best_fixed} ({rewards[best_fixed].mean():.4f}); best k per quarter: {best_q}; "
          f"best k at every step (oracle): {table.max(0).mean():.4f}")


if __name__ == "__main__":
    main()
