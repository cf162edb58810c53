"""The privacy-accuracy frontier over several defended models: one point per ``privacy.json``.

    python examples/pareto_report.py runs/privacy_none/privacy.json runs/privacy_k2/privacy.json \\
        runs/privacy_k6/privacy.json --out runs/pareto.png

Each ``privacy.json`` is written by ``examples/evaluate_privacy.py``; it carries the privacy score and the model's
utility (identification top-1 from ``train_fr.py``'s ``metrics.json``). The plot joins the non-dominated defences
(no other one is at least as accurate *and* at least as private, and better in one) and greys out the dominated
ones; the table says which is which.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from privacy.report import load_point, pareto_dominated, plot_pareto


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", type=Path, nargs="+", help="privacy.json files of evaluate_privacy.py")
    p.add_argument("--labels", nargs="+", default=None, help="one label per report (default: its defence)")
    p.add_argument("--out", type=Path, default=Path("runs/pareto.png"))
    args = p.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.reports):
        p.error(f"--labels gives {len(args.labels)} labels for {len(args.reports)} reports")
    points = [load_point(r) for r in args.reports]
    if args.labels:
        for pt, label in zip(points, args.labels):
            pt["label"] = label
    dom = pareto_dominated([(pt["accuracy"], pt["privacy"]) for pt in points])
    plot_pareto([pt["label"] for pt in points], [pt["accuracy"] for pt in points], [pt["privacy"] for pt in points],
                args.out)
    print(f"{'defence':<24}{'top-1':>8}{'privacy':>9}  frontier")
    for pt, d in zip(points, dom):
        pt["dominated"] = d
        print(f"{pt['label']:<24}{pt['accuracy']:>8.3f}{pt['privacy']:>9.3f}  {'dominated' if d else 'yes'}")
    print(f"saved {args.out}")
    return points


if __name__ == "__main__":
    main()
