"""Soak test: run many env steps on a small configuration and report the process's memory at the start and end.

    python benchmarks/soak.py                     # 100k steps of the tiny configuration
    python benchmarks/soak.py --steps 20000 --json

Memory is the resident set size (RSS) read from ``/proc/self/statm``: "start" is taken after a warm-up
(``--warmup`` steps, enough for the allocator and torch's caches to settle), "end" after the last step, and the
largest value seen at the sample points is reported too. Episodes end and reset as in training, so a leak
across episodes (tensors kept alive by logs, histories or autograd graphs) shows as growth from start to end.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from fr_models.system import rss_mib

#: The small configuration the soak runs by default: every part of a step runs, each part is cheap.
TINY: dict[str, Any] = {"batch_size": 16, "recipe": "tiny", "image_size": 32,
                        "episode_steps": 200, "eval_every": 50}


def soak(steps: int, warmup: int = 1000, samples: int = 20, action_mode: str = "sample_discrete",
         seed: int = 0, device: str = "cpu", **env_kwargs: Any) -> dict[str, Any]:
    """Run ``warmup + steps`` env steps with random actions and measure RSS along the way.

    :param steps: measured steps after the warm-up (>= 1).
    :param warmup: steps before the start figure is taken.
    :param samples: RSS samples over the measured steps (the last is at the end).
    :param action_mode: the env's action mode.
    :param seed: seed of the env and the actions.
    :param device: the env's torch device.
    :param env_kwargs: env arguments over :data:`TINY`.
    :return: ``start_mib``, ``end_mib``, ``max_mib``, ``growth`` (end / start - 1), ``steps``, ``episodes``,
        ``steps_per_s``, ``trace`` (``[(step, MiB), ...]``) and the configuration.
    """
    from mixup_env import FrequencyMixupEnv

    if steps < 1 or warmup < 0 or samples < 1:
        raise ValueError(f"need steps >= 1, warmup >= 0 and samples >= 1, got {steps}, {warmup}, {samples}")
    config = {**TINY, **env_kwargs, "action_mode": action_mode, "device": device}
    env = FrequencyMixupEnv(**config)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    episodes = 1

    def run(n: int) -> None:
        nonlocal episodes
        for _ in range(n):
            *_, truncated, _info = env.step(env.action_space.sample())
            if truncated:
                env.reset()
                episodes += 1

    run(warmup)
    start = rss_mib()
    trace = [(0, start)]
    marks = np.linspace(0, steps, samples + 1).astype(int)
    t0 = time.perf_counter()
    for a, b in zip(marks[:-1], marks[1:]):
        run(int(b - a))
        trace.append((int(b), rss_mib()))
    seconds = time.perf_counter() - t0
    end = trace[-1][1]
    return {"start_mib": start, "end_mib": end, "max_mib": max(m for _, m in trace), "growth": end / start - 1.0,
            "steps": steps, "warmup": warmup, "episodes": episodes, "steps_per_s": steps / seconds,
            "trace": trace, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100_000, help="measured env steps after the warm-up")
    p.add_argument("--warmup", type=int, default=1000, help="steps before the start figure")
    p.add_argument("--samples", type=int, default=20, help="RSS samples over the measured steps")
    p.add_argument("--action-mode", default="sample_discrete")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of the summary")
    args = p.parse_args(argv)
    out = soak(args.steps, args.warmup, args.samples, args.action_mode, args.seed, args.device)
    if args.json:
        print(json.dumps(out))
    else:
        for step, mib in out["trace"]:
            print(f"step {step:>8}: RSS {mib:8.1f} MiB")
        print(f"{out['steps']} steps ({out['episodes']} episodes) at {out['steps_per_s']:.0f} steps/s: RSS "
              f"{out['start_mib']:.1f} MiB after {out['warmup']} warm-up steps, {out['end_mib']:.1f} MiB at the end "
              f"({100 * out['growth']:+.2f} %), largest {out['max_mib']:.1f} MiB")
    return out


if __name__ == "__main__":
    main()
