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

from pathlib import Path

from privacy.cli import reproduce

if __name__ == "__main__":
    reproduce(doc=__doc__, root=Path(__file__).resolve().parent.parent)  # this repository's docs/
