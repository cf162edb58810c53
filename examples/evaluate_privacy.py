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

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from privacy.attacks import ATTACKS
from privacy.attacks._loop import MIN_UPDATES
from privacy.evaluate import DEFAULT_ATTACKS, AttackBudget, evaluate_privacy, exit_status, format_report

#: the options that make up the attack budget (``privacy.evaluate.AttackBudget``'s fields)
BUDGET_OPTIONS = tuple(f.name for f in dataclasses.fields(AttackBudget))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="fr_model.pt from train_fr.py (or the env's save_fr_model)")
    p.add_argument("--data", default="att_faces", help="the data set the model was trained on (name or .npz path)")
    p.add_argument("--split", type=Path, default=None, help="npz with private_idx / public_idx (default: split.npz "
                   "beside the model)")
    p.add_argument("--attacks", nargs="+", default=list(DEFAULT_ATTACKS), choices=ATTACKS)
    p.add_argument("--identities", type=int, default=None, help="attack the first N private identities (default all)")
    p.add_argument("--evaluator", type=Path, default=None, help="evaluator checkpoint to reuse, or where to save a "
                   "new one (default: <out>/evaluator.pt)")
    p.add_argument("--evaluator-epochs", type=int, default=40)
    p.add_argument("--prior", type=Path, default=None, help="VAE prior checkpoint to reuse, or where to save a new "
                   "one (default: <out>/vae_prior.pt)")
    p.add_argument("--prior-epochs", type=int, default=60, help="VAE prior training passes over the public faces")
    p.add_argument("--steps", type=int, default=300, help="white-box optimisation steps")
    p.add_argument("--restarts", type=int, default=4, help="white-box random starts per identity")
    p.add_argument("--views", type=int, default=4, help="random views the white-box objective averages over")
    p.add_argument("--decoder-epochs", type=int, default=20, help="black-box decoder training passes")
    p.add_argument("--unmix-epochs", type=int, default=60, help="data-level unmixer training passes")
    p.add_argument("--mix-k", type=int, nargs="+", default=None, help="k of the data-level attack (default: the "
                   "model's own: 1 for mask-only, its k for fixed, its k set for random/policy)")
    p.add_argument("--min-updates", type=int, default=MIN_UPDATES, help="fewest updates of every attack network "
                   "and of the evaluator, however few the faces")
    p.add_argument("--judge-min-updates", type=int, default=None, help="fewest updates of the evaluator and the "
                   "VAE prior, which are trained once and reused (default: --min-updates)")
    p.add_argument("--grid-identities", type=int, default=8, help="rows of the reconstruction grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs/privacy"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        args.budget = AttackBudget(**{name: getattr(args, name) for name in BUDGET_OPTIONS})
    except ValueError as e:
        p.error(str(e).replace("attack budget: ", "--").replace("_", "-"))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = evaluate_privacy(args.model, args.data, args.attacks, args.budget, split=args.split,
                              evaluator=args.evaluator, prior=args.prior, out=args.out, seed=args.seed,
                              device=args.device, progress=not args.no_progress)
    print("\n" + format_report(report))
    print(f"saved {args.out / 'privacy.json'}, {args.out / 'reconstructions.png'}, {report['evaluator']['path']}")
    return report


if __name__ == "__main__":
    code, why = exit_status(main())
    if code:
        print(f"evaluate_privacy.py: {why}", file=sys.stderr)
    sys.exit(code)
