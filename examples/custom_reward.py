"""Register a new reward in a few lines and train PPO on it: privacy (the mixed loss) minus a price on mixing."""
import sys

import gymnasium as gym
import numpy as np

import mixup_env
from agents import MixingStatsCallback, make_ppo


# `requires` names what the reward reads, so the env skips measuring the rest (optional: without it, all is measured)
@mixup_env.register_reward("priced_mixing", requires=("mixed_loss", "k_mean"))
def priced_mixing(record, price=0.1):
    return record.mixed_loss - price * record.k_mean  # each extra face mixed costs `price`


env = gym.make("mixup_env/FrequencyMixup-v0", reward="priced_mixing", reward_kwargs={"price": 0.1})
stats = MixingStatsCallback()
make_ppo(env, seed=0).learn(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, callback=stats)
ks = stats.history["k"]
print(f"mean k: first 20% of training {np.mean(ks[: len(ks) // 5]):.2f}, last 20% {np.mean(ks[-len(ks) // 5 :]):.2f}")
