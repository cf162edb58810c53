"""Compare fixed-k, random-k, a k schedule, the paper's REINFORCE and a trained SB3 agent on the same FR training
episodes (same seeds), and print and plot (PNG) mean reward and final clean accuracy per agent, with the spread
over seeds.

    python examples/compare_agents.py                                  # utility_aware reward, 3 seeds
    python examples/compare_agents.py --reward fr_loss --train-steps 1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mixup_env
from agents.compare import compare_agents, format_comparison, plot_comparison


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env-id", default="mixup_env/FrequencyMixupPerSample-v0", choices=list(mixup_env.ENV_IDS))
    p.add_argument("--reward", default="utility_aware", help="a registered reward name")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-steps", type=int, default=2000, help="training steps of each learning agent per seed")
    p.add_argument("--episode-steps", type=int, default=200, help="FR updates per episode")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data", default="synthetic")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--algo", default="ppo", choices=["ppo", "a2c", "sac"], help="the SB3 agent")
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = p.parse_args(argv)
    if args.train_steps < 1:
        p.error("--train-steps must be positive")
    env_kwargs = dict(reward=args.reward, episode_steps=args.episode_steps, batch_size=args.batch_size,
                      data=args.data, image_size=args.image_size)
    result = compare_agents(args.env_id, env_kwargs, args.seeds, args.train_steps, args.algo)
    print(format_comparison(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                          "rows": result.rows, "train_seconds": result.train_seconds}, indent=2))
    png = plot_comparison(result, args.out / "comparison.png", f"{args.env_id}, reward={args.reward}")
    print(f"saved {png} and {args.out / 'comparison.json'}")


if __name__ == "__main__":
    main()
