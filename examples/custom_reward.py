"""Register a new reward in a few lines and train PPO on it: privacy (the mixed loss) minus a price on mixing.

    python examples/custom_reward.py                     # 2000 env steps, each one FR update of the default env
    python examples/custom_reward.py --timesteps 500 --price 0.2
"""
import argparse

import gymnasium as gym
import numpy as np

import mixup_env
from agents import MixingStatsCallback, make_ppo


# `requires` names what the reward reads, so the env skips measuring the rest (optional: without it, all is measured)
@mixup_env.register_reward("priced_mixing", requires=("mixed_loss", "k_mean"))
def priced_mixing(record, price=0.1):
    return record.mixed_loss - price * record.k_mean  # each extra face mixed costs `price`


parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--timesteps", type=int, default=2000, help="env steps of PPO training (one FR update each)")
parser.add_argument("--price", type=float, default=0.1, help="the reward's price per extra face mixed")
parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
args = parser.parse_args()

env = gym.make("mixup_env/FrequencyMixup-v0", reward="priced_mixing", reward_kwargs={"price": args.price})
stats = MixingStatsCallback()
print(f"training PPO for {args.timesteps} env steps on the reward priced_mixing (price {args.price})")
make_ppo(env, seed=0).learn(args.timesteps, callback=stats, progress_bar=not args.no_progress)
ks = stats.history["k"]
print(f"mean k: first 20% of training {np.mean(ks[: len(ks) // 5]):.2f}, last 20% {np.mean(ks[-len(ks) // 5 :]):.2f}")
