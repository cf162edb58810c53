"""Attack a trained FR model and measure privacy: the model-inversion protocol of GMI / KED-MI / PLG-MI / MIBench.

    python examples/train_fr.py --data att_faces --image-size 64 --defence none --public-fraction 0.3 --out runs/att_none
    python examples/evaluate_privacy.py --model runs/att_none/fr_model.pt --data att_faces

The command line of :func:`privacy.evaluate.evaluate_privacy` (the protocol, the attacks and what is written are
in :mod:`privacy.evaluate`): the model must have been trained with ``train_fr.py --public-fraction`` (which
writes ``split.npz`` beside it; or pass ``--split``). Writes ``privacy.json``, ``reconstructions.png`` /
``.npz`` and ``evaluator.pt`` into ``--out`` and prints a table; exits 1 when no attack measured anything or a
figure is not finite.
"""

from __future__ import annotations

import sys

from privacy.cli import evaluate
from privacy.evaluate import exit_status

if __name__ == "__main__":
    code, why = exit_status(evaluate(doc=__doc__))
    if code:
        print(f"evaluate_privacy.py: {why}", file=sys.stderr)
    sys.exit(code)
