"""``docs/privacy.md``: one model per defence on LFW and AT&T, attacked at full strength, in one resumable run.

    MIXUP_ENV_DATA=../shared/data python3 benchmarks/privacy_page.py                          # every model
    MIXUP_ENV_DATA=../shared/data python3 benchmarks/privacy_page.py --datasets att_faces     # a slice
    python3 benchmarks/privacy_page.py --report-only                                          # the page only

What is run and how is :mod:`privacy.page`'s docstring. Each finished model is a JSON cell under ``--cells``
(default ``docs/results/privacy``, committed); models, judges and priors go to ``--work``. A rerun skips the
cells whose settings match, so an interrupted run continues where it stopped. After the page's defences, DP-SGD's
noise sweep (training only, points under ``<cells>/dpsgd_sweep``) and its compared point as the ``dpsgd`` cell
(``--no-dpsgd``: skipped); then the data-level attacks against each mixing scheme on the ``mask`` model's transform
(:mod:`privacy.kstudy`: fixed k = 2..6, uniform k, and the k distributions of the grid's policy cells in
``--policies``; records under ``<cells>/kstudy``; ``--no-kstudy``: skipped). Cost measured per cell on the page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from privacy.grid import CellStore  # noqa: E402
from privacy.page import PAGE_DATA, PAGE_DEFENCES, page_config, run_page, write_privacy_page  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(PAGE_DATA), choices=list(PAGE_DATA))
    p.add_argument("--defences", nargs="+", default=list(PAGE_DEFENCES), choices=list(PAGE_DEFENCES))
    p.add_argument("--cells", type=Path, default=ROOT / "docs" / "results" / "privacy")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "privacy.md")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "privacy_page")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--no-dpsgd", action="store_true", help="skip DP-SGD's noise sweep and its attacked model")
    p.add_argument("--no-kstudy", action="store_true", help="skip the data-level study of the mixing schemes")
    p.add_argument("--policies", type=Path, default=ROOT / "docs" / "results",
                   help="the grid's cells, whose policies' k distributions the data-level study attacks")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    store = CellStore(args.cells)
    if not args.report_only:
        run_page(page_config(args.work, tuple(args.datasets), tuple(args.defences), progress=not args.no_progress),
                 store, dpsgd=not args.no_dpsgd, kstudy=not args.no_kstudy, policies=args.policies)
    path = write_privacy_page(store, args.out, policies=args.policies, budget=page_config().attack)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
