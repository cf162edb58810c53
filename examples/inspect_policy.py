"""Look inside a per-sample mixing policy: which k does it choose for which samples?

    python examples/inspect_policy.py                                    # train REINFORCE briefly, then report
    python examples/inspect_policy.py --agent ppo --train-steps 3000
    python examples/inspect_policy.py --agent reinforce --load runs/reinforce.pt --steps 400

Runs the agent on the per-sample env and reports, for each per-sample feature (the FR model's loss, confidence
and margin on the sample, its identity's frequency), the distribution of k over quantile bins of that feature
and the feature's correlation with k.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
from stable_baselines3 import PPO

import mixup_env  # noqa: F401
from agents import Reinforce, format_k_by_feature, k_by_feature, make_agent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--agent", default="reinforce", choices=["reinforce", "ppo"])
    p.add_argument("--load", type=Path, default=None, help="a saved agent (REINFORCE .pt or PPO .zip) instead of training")
    p.add_argument("--train-steps", type=int, default=2000, help="training steps when not loading")
    p.add_argument("--steps", type=int, default=200, help="env steps to collect (k, features) pairs from")
    p.add_argument("--bins", type=int, default=4, help="quantile bins per feature")
    p.add_argument("--reward", default="fr_loss")
    p.add_argument("--episode-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", type=Path, default=None, help="save the trained agent here")
    args = p.parse_args(argv)
    if min(args.train_steps, args.steps, args.bins) < 1:
        p.error("--train-steps, --steps and --bins must be positive")
    kwargs = dict(reward=args.reward, episode_steps=args.episode_steps, batch_size=args.batch_size)
    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", **kwargs)
    if args.agent == "reinforce":
        agent = Reinforce.load(args.load, env) if args.load else Reinforce(
            env, seed=args.seed, per_sample_reward=args.reward == "fr_loss").learn(args.train_steps, seed=args.seed, progress_bar=True)
    else:
        agent = PPO.load(args.load) if args.load else make_agent("ppo", env, seed=args.seed).learn(args.train_steps, progress_bar=True)
    if args.save and not args.load:
        agent.save(args.save)
    table = k_by_feature(agent, env, steps=args.steps, seed=args.seed + 10_000, bins=args.bins)
    print(f"k chosen per sample by {args.agent} (reward={args.reward}), over {args.steps} steps "
          f"x {args.batch_size} samples, by quantile bin of each feature:\n")
    print(format_k_by_feature(table))


if __name__ == "__main__":
    main()
