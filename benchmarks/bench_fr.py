"""Frequency-domain FR vs the pixel-domain baseline on real faces: identification top-1, time per epoch, ratio,
and LFW 10-fold verification, in one run.

    MIXUP_ENV_DATA=../shared/data python benchmarks/bench_fr.py
    MIXUP_ENV_DATA=../shared/data python benchmarks/bench_fr.py --datasets lfw --epochs 30 --image-size 112

Each model trains with `examples/train_fr.py`'s code (no mixing: --defence none for pixels, mask for frequency),
same split, same seed, same epochs. The target stated in the project's issue 4: frequency-domain identification
within 2 points of pixel-domain at >= 4x less time per epoch.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("train_fr", ROOT / "examples" / "train_fr.py")
train_fr = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(train_fr)  # type: ignore[union-attr]


def compare(datasets: list[str], epochs: list[int], image_size: int = 64,
            backbones: tuple[str, ...] = ("pixel", "grid", "unblock"), seed: int = 0,
            out: Path = Path("runs/bench_fr"), progress: bool = False) -> list[tuple[str, str, int, dict]]:
    """Train each backbone on each data set with ``train_fr.py``'s code; return ``(data, backbone, epochs, metrics)``.

    :param datasets: data set names or paths; ``epochs`` gives the epochs of each, in order (the last repeats).
    """
    rows = []
    for data, n_epochs in zip(datasets, list(epochs) + [epochs[-1]] * len(datasets)):
        for backbone in backbones:
            defence = "none" if backbone == "pixel" else "mask"
            m = train_fr.main(["--data", data, "--image-size", str(image_size), "--defence", defence,
                               "--backbone", backbone, "--epochs", str(n_epochs), "--seed", str(seed),
                               *([] if progress else ["--no-progress"]), "--out", str(out / f"{data}_{backbone}")])
            rows.append((data, backbone, n_epochs, m))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["att_faces", "lfw"])
    p.add_argument("--epochs", type=int, nargs="+", default=[40, 15], help="epochs per data set, in order")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--backbones", nargs="+", default=["pixel", "grid", "unblock"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/bench_fr"))
    args = p.parse_args()
    rows = compare(args.datasets, args.epochs, args.image_size, tuple(args.backbones), args.seed, args.out)
    print(f"\n{'data':>10} {'model':>8} {'epochs':>6} {'top-1':>7} {'top-5':>7} {'s/epoch':>8} {'pixel/this':>10} "
          f"{'top-1 - pixel':>13} {'LFW verif. (all)':>18} {'(unseen ids)':>14}")
    for data, backbone, epochs, m in rows:
        pixel = next(r[3] for r in rows if r[0] == data and r[1] == "pixel")
        ver = m.get("verification", {})
        cell = lambda part: f"{ver[part]['accuracy_mean']:.4f}±{ver[part]['accuracy_std']:.4f}" if part in ver else "-"
        print(f"{data:>10} {backbone:>8} {epochs:>6} {m['identification']['top1']:7.4f} {m['identification']['top5']:7.4f} "
              f"{m['seconds_per_epoch']:8.3f} {pixel['seconds_per_epoch'] / m['seconds_per_epoch']:9.2f}x "
              f"{100 * (m['identification']['top1'] - pixel['identification']['top1']):+12.1f}p "
              f"{cell('all'):>18} {cell('unseen_identities'):>14}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
