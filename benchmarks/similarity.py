"""SSIM and PSNR: this package's batched torch functions against scikit-image and torchmetrics, in one run.

    python3 benchmarks/similarity.py            # needs scikit-image (the test extra); torchmetrics if installed

:func:`privacy.attacks.attack_metrics` compares every reconstruction with every private face of its identity:
thousands of pairs per attack. Prints, for a batch of ``--pairs`` 64x64 grey pairs: seconds per call of each
implementation (median of ``--reps``), its ratio to ours, and its largest difference from scikit-image's values
(the reference: Wang et al. 2004 with a Gaussian window, sigma 1.5, population covariance, valid windows).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fr_models.trainer import atomic_write  # noqa: E402
from privacy.attacks.metrics import psnr, ssim  # noqa: E402


def timed(fn, reps: int) -> tuple[float, object]:
    out = fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=512)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "similarity.md"),
                   help="the Markdown table (none: --out '')")
    args = p.parse_args(argv)
    args.out = Path(args.out) if args.out else None
    torch.set_num_threads(2)
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.pairs, 1, 64, 64, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    xs, ys = x[:, 0].double().numpy(), y[:, 0].double().numpy()
    impl = {
        "ssim": {"mixup-env (torch, batched)": lambda: ssim(x, y).double().numpy(),
                 "scikit-image (per image)": lambda: np.array([structural_similarity(
                     a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
                     for a, b in zip(xs, ys)])},
        "psnr": {"mixup-env (torch, batched)": lambda: psnr(x, y).double().numpy(),
                 "scikit-image (per image)": lambda: np.array([peak_signal_noise_ratio(a, b, data_range=1.0)
                                                               for a, b in zip(xs, ys)])},
    }
    if importlib.util.find_spec("torchmetrics") is not None:
        from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
        from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

        impl["ssim"]["torchmetrics (batched)"] = lambda: tm_ssim(y, x, data_range=1.0, reduction="none").double().numpy()
        impl["psnr"]["torchmetrics (batched)"] = lambda: tm_psnr(y, x, data_range=1.0, reduction="none",
                                                                 dim=(1, 2, 3)).double().numpy()
    lines = ["# SSIM and PSNR: ours against the libraries", "",
             "Written by `python3 benchmarks/similarity.py`. " + __doc__.split("\n\n")[2].replace("\n", " "), "",
             f"{args.pairs} pairs of 64x64 grey images, median of {args.reps} calls, torch threads 2.", "",
             "| metric | implementation | s per call | x ours | max diff from scikit-image |", "|---|---|---|---|---|"]
    for metric, fns in impl.items():
        results = {name: timed(fn, args.reps) for name, fn in fns.items()}
        ours = results["mixup-env (torch, batched)"][0]
        ref = results["scikit-image (per image)"][1]
        for name, (sec, val) in results.items():
            lines.append(f"| {metric} | {name} | {sec:.4f} | {sec / ours:.1f} | {float(np.abs(val - ref).max()):.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        atomic_write(args.out, lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
