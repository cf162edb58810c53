"""Reproduce the paper's claim on real faces: every defence, data set and seed, attacked and evaluated; writes
``docs/RESULTS.md``.

    export MIXUP_ENV_DATA=../shared/data
    python examples/reproduce.py                  # the full grid (about 2 h on 2 CPU cores), resumable
    python examples/reproduce.py --quick          # a reduced grid in minutes: AT&T, one seed, smaller attacks
    python examples/reproduce.py --report-only    # rewrite docs/RESULTS.md from the finished cells alone

The grid, its cells, the resumable cell store and the report are :mod:`privacy.grid` and :mod:`privacy.results`;
this script is their command line. Each finished cell is a small JSON file
(``docs/results/<data>__<defence>__s<seed>.json``), so an interrupted run picks up where it stopped and the page
is regenerated from the cells without recomputing anything. Defences: :data:`privacy.grid.GRID_DEFENCES`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from privacy.grid import (
    DATASETS,
    GRID_ATTACKS,
    GRID_DEFENCES,
    QUICK_AGENT,
    QUICK_ATTACKS,
    AgentBudget,
    CellStore,
    GridConfig,
    run_grid,
)
from privacy.results import write_report

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=None, help="data sets (default: lfw att_faces extended_yaleb; "
                   "--quick: att_faces)")
    p.add_argument("--defences", nargs="+", default=list(GRID_DEFENCES), choices=list(GRID_DEFENCES))
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2; --quick: 0)")
    p.add_argument("--quick", action="store_true", help="reduced grid: smaller attacks and agents, cells and "
                   "report under --work (the repository's results are left alone)")
    p.add_argument("--report-only", action="store_true", help="compute nothing: rewrite the report from the cells")
    p.add_argument("--epochs", type=int, default=None, help="override every data set's training epochs")
    p.add_argument("--cells", type=Path, default=None, help="folder of the cell JSON files (default docs/results; "
                   "--quick: <work>/quick/cells)")
    p.add_argument("--report", type=Path, default=None, help="the Markdown report (default docs/RESULTS.md; "
                   "--quick: <work>/quick/RESULTS.md)")
    p.add_argument("--work", type=Path, default=Path("runs/reproduce"), help="models, agents, evaluators")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    datasets = args.datasets or (["att_faces"] if args.quick else ["lfw", "att_faces", "extended_yaleb"])
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    try:
        args.config = GridConfig(datasets, args.defences, seeds, QUICK_ATTACKS if args.quick else GRID_ATTACKS,
                                 QUICK_AGENT if args.quick else AgentBudget(), args.epochs, args.work,
                                 progress=not args.no_progress)
    except ValueError as e:
        p.error(str(e))
    base = args.work / "quick" if args.quick else None
    args.cells = args.cells or (base / "cells" if base else ROOT / "docs" / "results")
    args.report = args.report or (base / "RESULTS.md" if base else ROOT / "docs" / "RESULTS.md")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    store = CellStore(args.cells)
    if not args.report_only:
        run_grid(args.config, store)
    path = write_report(store, args.report, DATASETS, GRID_DEFENCES)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
