"""Does a smaller attack budget see what the full budget sees? The grid's budgets checked on the page's models.

The defence grid attacks each of its many cells with :data:`privacy.grid.GRID_ATTACKS`, a fraction of the full
:class:`~privacy.evaluate.AttackBudget` the privacy page spends on each of its few models. :func:`compare_budgets`
attacks the page's models again (the same model files, judges and seed) with the smaller budget and sets the
figures side by side: per attack, the first judge's top-1 under each budget with its bootstrap 95 % interval, and
whether the small budget's figure lies inside the full budget's interval (``within``). A grid whose budget misses
the full figures on the page's models cannot be read as like for like. Each compared model is written into a
:class:`~privacy.grid.CellStore` as it finishes, so an interrupted comparison continues where it stopped
(``benchmarks/grid_budget.py`` is the command line).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from privacy.evaluate import AttackBudget, evaluate_privacy
from privacy.grid import ATTACKS, GRID_ATTACKS, Cell, CellStore, judge_paths, settings_hash
from privacy.page import page_config

__all__ = ["budget_table", "compare_budgets"]


def compare_budgets(page: CellStore, work: str | Path, store: CellStore, budget: AttackBudget = GRID_ATTACKS,
                    defences: Sequence[str] | None = None, attacks: Sequence[str] = ATTACKS) -> list[dict[str, Any]]:
    """Attack the page's models with ``budget`` and compare each attack's figure with the page's.

    :param page: the page's cells (full budget).
    :param work: the page's work folder, holding the models (``<data>/<defence>_s<seed>/fr_model.pt``).
    :param store: where each compared model is written as it finishes (reused when its settings match).
    :param budget: the smaller budget (default: the grid's).
    :param defences: compare only these defences' models (``None``: every page cell).
    :param attacks: the attacks compared.
    :return: one record per compared model: ``data``, ``defence``, ``seed``, ``budget``, ``judge``, ``rows`` (per
        attack: ``full`` and ``small`` top-1, their ``full_interval`` / ``small_interval``, ``within``: the
        small-budget figure inside the full interval).
    :raises FileNotFoundError: the page holds no cell, or a compared cell's model is not in ``work``.
    """
    work = Path(work)
    records = []
    for cell in page.require("run benchmarks/privacy_page.py first"):
        s = cell["settings"]
        if defences is not None and s["defence"] not in defences:
            continue
        key = Cell(s["data"], s["defence"], s["seed"])
        model = work / key.data / f"{key.defence}_s{key.seed}" / "fr_model.pt"
        if not model.is_file():
            raise FileNotFoundError(f"{model}: the page's model of {key.data} {key.defence} is not in the work folder "
                                    f"{work} (rerun benchmarks/privacy_page.py there, or pass its --work)")
        settings = {"page_cell": cell["settings_hash"], "budget": budget.as_dict(), "attacks": list(attacks)}
        if store.finished(key, settings):
            records.append(store.read(key))
            print(f"budgets {key.data} {key.defence}: reused", flush=True)
            continue
        config = dataclasses.replace(page_config(work, progress=False), attack=budget)
        ev_path, prior_path, gallery = judge_paths(config, key.data)
        t0 = time.perf_counter()
        report = evaluate_privacy(model, key.data, attacks, budget, judges=s["judges"], evaluator=ev_path,
                                  gallery=gallery, prior=prior_path, out=model.parent / "privacy_small_budget",
                                  seed=key.seed, progress=False)
        rows = {}
        for attack in attacks:
            full, small = cell["attacks"].get(attack), report["attacks"].get(attack, {})
            if full is None or "top1" not in small:
                continue
            lo, hi = full["intervals"]["top1"]
            rows[attack] = {"full": full["top1"], "full_interval": [lo, hi], "small": small["top1"],
                            "small_interval": list(small["intervals"]["top1"]), "within": lo <= small["top1"] <= hi}
        record = {"data": key.data, "defence": key.defence, "seed": key.seed, "budget": budget.as_dict(),
                  "judge": s["judges"][0], "full_identities": cell["attacked_identities"],
                  "small_identities": report["attacked_identities"], "rows": rows,
                  "seconds": round(time.perf_counter() - t0, 1), "full_seconds": cell.get("attack_seconds"),
                  "settings": settings, "settings_hash": settings_hash(settings),
                  "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        store.write(key, record)
        print(f"budgets {key.data} {key.defence}: {sum(r['within'] for r in rows.values())}/{len(rows)} attacks "
              f"within the full budget's interval, {record['seconds']:.0f} s", flush=True)
        records.append(record)
    return records


def budget_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown rows of :func:`compare_budgets`' records: per model and attack, both figures side by side."""
    rows = ["| data set | defence | attack | full budget top-1 (95 % interval) | small budget top-1 (95 % interval) | "
            "inside |", "|---|---|---|---|---|---|"]
    for r in records:
        for attack, m in r["rows"].items():
            (flo, fhi), (slo, shi) = m["full_interval"], m["small_interval"]
            rows.append(f"| {r['data']} | {r['defence']} | {attack} | {m['full']:.3f} ({flo:.3f}-{fhi:.3f}) | "
                        f"{m['small']:.3f} ({slo:.3f}-{shi:.3f}) | {'yes' if m['within'] else '**no**'} |")
    return rows
