"""Env throughput, and the cost of one env step relative to one bare FR update on the same batch.

    python benchmarks/bench_env.py                       # default env (synthetic 64x64, batch 64, grid backbone)
    python benchmarks/bench_env.py --backbone unblock --data lfw --image-size 64

Both are timed in the same run, interleaved, so machine noise hits them alike; the ratio is what to read.
The parts of a step are timed too: the mixing, and the clean forward pass over 2N samples (this batch after the
update, for ``clean_loss_after``, and the upcoming batch, for the per-sample observation features).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mixup_env import FrequencyMixupEnv, mix_batch


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="timed env steps (and as many bare updates)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data", default="synthetic")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--backbone", default="grid", choices=["grid", "unblock"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    env = FrequencyMixupEnv(data=args.data, image_size=args.image_size, batch_size=args.batch_size,
                            backbone=args.backbone, episode_steps=10**9)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    trainer = env.trainer
    assert trainer is not None
    x, y = env._batch
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # warm-up
        env.step(int(rng.integers(len(env.k_values))))
        trainer.train_step(x, y)

    step_t, update_t, mix_t, fwd_t = [], [], [], []
    for _ in range(args.steps):
        step_t += timed(lambda: env.step(int(rng.integers(len(env.k_values)))), 1)
        x, y = env._batch
        update_t += timed(lambda: trainer.train_step(x, y), 1)
        mix_t += timed(lambda: mix_batch(x, y, 6, env.num_classes, 1.0, gen), 1)
        xx, yy = torch.cat([x, x]), torch.cat([y, y])
        fwd_t += timed(lambda: trainer.sample_stats(xx, yy), 1)

    med = {k: statistics.median(v) * 1e3 for k, v in
           {"env step": step_t, "bare FR update": update_t, "mixing (k=6)": mix_t,
            "clean fwd (2N)": fwd_t}.items()}
    print(f"config: data={env.data_source} input={tuple(x.shape[1:])} batch={args.batch_size} "
          f"backbone={args.backbone} torch threads={torch.get_num_threads()} steps={args.steps}")
    for name, ms in med.items():
        print(f"{name:>16}: {ms:7.2f} ms (median)")
    print(f"{'env steps/s':>16}: {1e3 / med['env step']:7.1f}  (from the median; mean-based: {len(step_t) / sum(step_t):.1f})")
    print(f"{'step / update':>16}: {med['env step'] / med['bare FR update']:7.2f}x")


if __name__ == "__main__":
    main()
