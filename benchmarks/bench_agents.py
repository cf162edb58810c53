"""Do the learning agents beat random k and the best fixed k? Over several seeds, on a fixed budget of FR updates.

    python benchmarks/bench_agents.py                         # utility_aware and fr_loss, 3 seeds, ~12 min on 2 cores
    python benchmarks/bench_agents.py --rewards utility_aware --seeds 0 1 2 3 4

For each reward: every agent (fixed k for each k, random k, a rising k schedule, REINFORCE, PPO) is evaluated on
the same FR training episode per seed (the same FR initialisation, data order and mixing stream); learning
agents first train for --train-steps env steps (= FR updates). Prints mean ± std over seeds, and per-seed paired
differences of the learning agents against random k and the best fixed k. Plots go to --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agents.compare import compare_agents, format_comparison, plot_comparison


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rewards", nargs="+", default=["utility_aware", "fr_loss"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-steps", type=int, default=2000)
    p.add_argument("--episode-steps", type=int, default=200)
    p.add_argument("--env-id", default="mixup_env/FrequencyMixupPerSample-v0")
    p.add_argument("--out", type=Path, default=Path("runs/bench_agents"))
    args = p.parse_args()
    for reward in args.rewards:
        t0 = time.perf_counter()
        result = compare_agents(args.env_id, {"reward": reward, "episode_steps": args.episode_steps}, args.seeds,
                                args.train_steps, progress=False)
        print(f"\n=== reward={reward}, env={args.env_id}, {args.train_steps} training steps per learning agent and "
              f"seed, evaluation episodes of {args.episode_steps} FR updates ({time.perf_counter() - t0:.0f} s)")
        print(format_comparison(result))
        plot_comparison(result, args.out / f"{reward}.png", f"{args.env_id}, reward={reward}")


if __name__ == "__main__":
    main()
