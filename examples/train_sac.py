"""Train an SB3 SAC (or PPO/A2C) strategy on a continuous mixup-env id, let it train one FR model, save both.

    python examples/train_sac.py                                               # per-batch k from a Box action
    python examples/train_sac.py --env-id mixup_env/FrequencyMixupPerSampleContinuous-v0 --control-alpha
    python examples/train_sac.py --algo a2c --reward utility_aware

The continuous action maps to k (nearest of the k values) and, with --control-alpha, to the Dirichlet
concentration of the mixing weights.
"""

from __future__ import annotations

from agents.training import parse_training_args, train_and_evaluate, training_parser


def main(argv: list[str] | None = None) -> dict:
    parser = training_parser(__doc__.split("\n\n")[0], "sac", "mixup_env/FrequencyMixupContinuous-v0",
                             ("sac", "ppo", "a2c"))
    return train_and_evaluate(parse_training_args(parser, argv))


if __name__ == "__main__":
    main()
