"""``docs/grid_budget.md``: the grid's attack budget against the full one, on the privacy page's models.

    MIXUP_ENV_DATA=../shared/data python3 benchmarks/grid_budget.py                      # every page model
    MIXUP_ENV_DATA=../shared/data python3 benchmarks/grid_budget.py --defences pixel mask

Needs the page's cells (``docs/results/privacy``) and its models (``runs/privacy_page``): run
``benchmarks/privacy_page.py`` first. Each compared model is a JSON record under ``--records`` (default
``docs/results/grid_budget``, committed), so an interrupted run continues. What is compared: :mod:`privacy.budgets`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fr_models.trainer import atomic_write  # noqa: E402
from privacy.budgets import budget_table, compare_budgets  # noqa: E402
from privacy.grid import GRID_ATTACKS, CellStore  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=Path, default=ROOT / "docs" / "results" / "privacy")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "privacy_page")
    p.add_argument("--records", type=Path, default=ROOT / "docs" / "results" / "grid_budget")
    p.add_argument("--defences", nargs="+", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "grid_budget.md")
    args = p.parse_args(argv)
    records = compare_budgets(CellStore(args.cells), args.work, CellStore(args.records), GRID_ATTACKS, args.defences)
    inside = sum(m["within"] for r in records for m in r["rows"].values())
    total = sum(len(r["rows"]) for r in records)
    text = "\n".join([
        "# The grid's attack budget against the full one", "",
        "Written by `MIXUP_ENV_DATA=../shared/data python3 benchmarks/grid_budget.py` from the records in "
        "`docs/results/grid_budget/` (never typed). Each of the privacy page's models is attacked again with the "
        f"grid's budget `{GRID_ATTACKS.as_dict()}` (same model, judges and seed) and set beside the page's "
        "full-budget figure (top-1 by the first judge, bootstrap 95 % intervals over the reconstructions). "
        "*inside*: the grid's figure lies inside the full budget's interval.", "",
        f"**{inside} of {total} attack figures inside.**", "", *budget_table(records), "",
        f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", ""])
    atomic_write(args.out, lambda tmp: tmp.write_text(text))
    print(f"{inside} of {total} inside; wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
