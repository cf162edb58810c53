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
import json
from pathlib import Path
from typing import Any

from fr_models.attacks import pareto_dominated, plot_pareto


def load_point(path: Path) -> dict[str, Any]:
    """Label, utility and privacy of one evaluation (clear errors for files that are not ``privacy.json``)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not a readable privacy.json ({e})") from e
    if not isinstance(report, dict) or report.get("privacy_score") is None:
        raise ValueError(f"{str(path)!r} has no privacy_score: expected the privacy.json of evaluate_privacy.py")
    utility = report.get("utility") or {}
    if "top1" not in utility:
        raise ValueError(f"{str(path)!r} has no utility (identification top-1): evaluate a model whose folder holds "
                         "train_fr.py's metrics.json")
    k = f" k={report['k']}" if report.get("k") else ""
    label = f"{report.get('defence')}{k} ({report.get('input')})"
    return {"label": label, "path": str(path), "accuracy": float(utility["top1"]),
            "privacy": float(report["privacy_score"])}


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
