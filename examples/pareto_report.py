"""The privacy-accuracy frontier over several defended models: one point per ``privacy.json``.

    python examples/pareto_report.py runs/privacy_none/privacy.json runs/privacy_k2/privacy.json \\
        runs/privacy_k6/privacy.json --out runs/pareto.png

Each ``privacy.json`` is written by ``examples/evaluate_privacy.py``; it carries the privacy score and the model's
utility (identification top-1 from ``train_fr.py``'s ``metrics.json``). The plot joins the non-dominated defences
(no other one is at least as accurate *and* at least as private, and better in one) and greys out the dominated
ones; the table says which is which.
"""

from __future__ import annotations

from privacy.cli import pareto

if __name__ == "__main__":
    pareto(doc=__doc__)
