"""Train an SB3 PPO (or A2C) mixing strategy on mixup-env, then let it train one FR model and save both.

    python examples/train_ppo.py                                   # per-batch k, synthetic faces, ~2 min on 2 cores
    python examples/train_ppo.py --env-id mixup_env/FrequencyMixupPerSample-v0    # one k per sample (the paper's)
    python examples/train_ppo.py --algo a2c --n-envs 2 --vec-env subproc --normalize --tensorboard runs/tb
    python examples/train_ppo.py --reward utility_aware --timesteps 8000
    python examples/train_ppo.py --data lfw --image-size 64 --timesteps 20000   # real faces ($MIXUP_ENV_DATA/lfw)
    python examples/train_ppo.py --load runs/ppo/ppo_agent.zip --timesteps 0    # evaluate a saved agent

Prints a summary: training speed, the k the agent chose (early vs late in training, and in the final episode),
the mean reward, and the clean identification accuracy of the FR model trained under the learned strategy.
"""

from __future__ import annotations

from agents.training import parse_training_args, train_and_evaluate, training_parser


def main(argv: list[str] | None = None) -> dict:
    parser = training_parser(__doc__.split("\n\n")[0], "ppo", "mixup_env/FrequencyMixup-v0", ("ppo", "a2c"))
    return train_and_evaluate(parse_training_args(parser, argv))


if __name__ == "__main__":
    main()
