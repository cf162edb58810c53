"""The command lines of ``examples/`` (``train_fr.py``, ``evaluate_privacy.py``, ``reproduce.py``,
``pareto_report.py``): argument parsing and printing over the library, and nothing else. Each takes ``argv`` (``None``:
``sys.argv``) and the calling script's docstring, whose first paragraph is the ``--help`` description.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from fr_models.backbones import BACKBONES
from fr_models.data import load_faces
from fr_models.recipes import RECIPES, default_recipe, get_recipe
from mixup_env.transform import COLOURS, UPSAMPLE_FACTORS
from privacy.attacks import ATTACKS
from privacy.attacks._loop import MIN_UPDATES
from privacy.attacks.whitebox import WHITEBOX_LOSSES
from privacy.defences import DEFENCES, POLICY_ALGOS, POLICY_MODES, DefenceSpec, PolicySpec, train_fr_model
from privacy.evaluate import DEFAULT_ATTACKS, DEFAULT_JUDGES, JUDGES, AttackBudget, evaluate_privacy, format_report
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
from privacy.report import load_point, pareto_dominated, plot_pareto
from privacy.results import sanity_checks, write_report

__all__ = ["evaluate", "pareto", "reproduce", "train_fr"]


def _summary(doc: str | None, default: str) -> str:
    """The first paragraph of a script's docstring (its ``--help`` description)."""
    return doc.split("\n\n")[0] if doc else default


# --- train_fr.py ------------------------------------------------------------------------------------------------
def _train_fr_args(argv: list[str] | None, doc: str | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=_summary(doc, "Train an FR model under a defence and evaluate it."), formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="synthetic", help="'synthetic', a .npz path, or a name under $MIXUP_ENV_DATA")
    p.add_argument("--recipe", default=None, choices=list(RECIPES), help="model and training settings "
                   "(fr_models.recipes); default: 'real' for real faces, 'small' for the synthetic ones. The options "
                   "below override single settings")
    p.add_argument("--image-size", type=int, default=None, help="crop and resize faces (a multiple of 16)")
    p.add_argument("--defence", default="mask", choices=DEFENCES)
    p.add_argument("--k", type=int, default=3, help="images per mix for --defence fixed")
    p.add_argument("--k-values", type=int, nargs="+", default=[2, 3, 4, 5, 6], help="k set (random, policy)")
    p.add_argument("--policy", type=Path, default=None, help="saved agent for --defence policy")
    p.add_argument("--policy-algo", default="reinforce", choices=list(POLICY_ALGOS))
    p.add_argument("--policy-env-id", default="mixup_env/FrequencyMixupPerSample-v0")
    p.add_argument("--policy-mode", default="frozen", choices=list(POLICY_MODES),
                   help="frozen: the saved --policy run greedily; cotrain: a fresh agent trained over the FR run "
                        "itself (the paper's way; no --policy)")
    p.add_argument("--policy-reward", default="fr_loss", help="the reward a co-trained agent learns from")
    p.add_argument("--policy-validation-fraction", type=float, default=0.0,
                   help="the env's validation split, for a reward that reads it (constrained)")
    p.add_argument("--backbone", default=None, help=f"one of {', '.join(BACKBONES)}: resnet takes pixels (--defence "
                   "none) and frequency maps; grid / unblock frequency maps only, pixel pixels only")
    p.add_argument("--widths", type=int, nargs="+", default=None, help="stage widths")
    p.add_argument("--blocks", type=int, nargs="+", default=None, help="residual blocks per stage (resnet)")
    p.add_argument("--embedding-dim", type=int, default=None)
    p.add_argument("--head", default=None, choices=["softmax", "arcface", "cosface"])
    p.add_argument("--upsample", type=int, default=None, choices=list(UPSAMPLE_FACTORS),
                   help="upsample faces by this factor before the block DCT")
    p.add_argument("--colour", default=None, choices=list(COLOURS),
                   help="default: grey for grey faces, ycbcr for colour ones")
    p.add_argument("--storage", default="float32", choices=["float32", "float16"],
                   help="dtype of the precomputed model inputs (float16 halves their memory)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--lr-schedule", default=None, choices=["cosine", "constant"])
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror training faces at random (exactly, in the DCT domain)")
    p.add_argument("--max-shift", type=int, default=None, help="shift training faces at random by up to this many "
                   "map positions (whole 8x8 blocks of the upsampled face); pixel models by the same distance")
    p.add_argument("--dropout", type=float, default=None,
                   help="the resnet embedding layer's dropout probability (IResNet's)")
    p.add_argument("--recalibrate-norms", action=argparse.BooleanOptionalAction, default=True,
                   help="after training, re-estimate batch-norm statistics on clean training faces")
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate with the flip test: each face's embedding is the sum of the normalised embeddings "
                   "of the face and its mirror image (fr_models.extract_embeddings(flip=...))")
    p.add_argument("--noise-multiplier", type=float, default=1.0, help="DP-SGD noise over the clipping norm")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="DP-SGD per-sample gradient clipping norm")
    p.add_argument("--delta", type=float, default=1e-5, help="DP-SGD: the delta of the reported epsilon")
    p.add_argument("--smoothing", type=float, default=-0.05, help="nls: the final (negative) label smoothing")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--public-fraction", type=float, default=None,
                   help="hold out this fraction of identities as the attacker's public faces (not trained on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=None, help="seed of the private/public identity split "
                   "(default: --seed); fix it to train several seeds on the same private identities")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs/fr"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.defence == "policy" and args.policy is None and args.policy_mode == "frozen":
        p.error("--defence policy needs --policy PATH (or --policy-mode cotrain)")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    try:
        policy = (PolicySpec(args.policy, args.policy_algo, args.policy_env_id, args.policy_mode, args.policy_reward,
                             args.policy_validation_fraction) if args.defence == "policy" else None)
        args.spec = DefenceSpec(args.defence, k=args.k, k_values=tuple(args.k_values), policy=policy,
                                noise_multiplier=args.noise_multiplier, max_grad_norm=args.max_grad_norm,
                                delta=args.delta, smoothing=args.smoothing)
    except ValueError as e:
        p.error(str(e))
    if args.backbone is not None and args.backbone not in BACKBONES:
        p.error(f"unknown backbone {args.backbone!r}; known backbones: {', '.join(BACKBONES)}")
    if (args.backbone == "pixel") != (args.defence == "none") and args.backbone in ("pixel", "grid", "unblock"):
        p.error("the pixel backbone goes with --defence none, the frequency backbones (grid, unblock) with the others; "
                "resnet goes with every defence")
    return args


def train_fr(argv: list[str] | None = None, doc: str | None = None) -> dict[str, Any]:
    """``examples/train_fr.py``: :func:`privacy.defences.train_fr_model` from a command line; prints the figures
    beside their chance levels and returns the metrics."""
    args = _train_fr_args(argv, doc)
    faces = load_faces(args.data)
    recipe = get_recipe(args.recipe or default_recipe(faces.source)).replace(
        backbone=args.backbone, widths=None if args.widths is None else tuple(args.widths),
        blocks=None if args.blocks is None else tuple(args.blocks), embedding_dim=args.embedding_dim, head=args.head,
        upsample=args.upsample, image_size=args.image_size, lr=args.lr, weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule, batch_size=args.batch_size, epochs=args.epochs, hflip=args.hflip,
        max_shift=args.max_shift, dropout=args.dropout)
    try:
        metrics = train_fr_model(faces, args.spec, recipe, args.out, seed=args.seed, split_seed=args.split_seed,
                                 public_fraction=args.public_fraction, test_fraction=args.test_fraction,
                                 colour=args.colour, storage=args.storage, recalibrate_norms=args.recalibrate_norms,
                                 flip_test=args.flip_test, device=args.device, progress=not args.no_progress)
    except ValueError as e:
        raise SystemExit(f"train_fr.py: {e}") from None
    ident, chance = metrics["identification"], metrics["chance"]
    print(f"{args.defence:>7} {metrics['backbone']:>7}: top-1 {ident['top1']:.4f}  top-5 {ident['top5']:.4f}  "
          f"balanced {ident['balanced']:.4f}  (chance: uniform {chance['uniform']:.4f}, majority class "
          f"{chance['majority_class']:.4f})  {metrics['seconds_per_epoch']:.2f} s/epoch")
    for part, res in metrics.get("verification", {}).items():
        if isinstance(res, dict):
            print(f"  LFW verification, {part}: {res['accuracy_mean']:.4f} ± {res['accuracy_std']:.4f} over "
                  f"{res['num_pairs']} pairs, AUC {res['roc_auc']:.4f}")
    print(f"  saved {args.out / 'metrics.json'}, {args.out / 'fr_model.pt'}, {args.out / 'split.npz'}")
    return metrics


# --- evaluate_privacy.py ----------------------------------------------------------------------------------------
#: the options that make up the attack budget (``privacy.evaluate.AttackBudget``'s fields)
BUDGET_OPTIONS = tuple(f.name for f in dataclasses.fields(AttackBudget))


def _evaluate_args(argv: list[str] | None, doc: str | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=_summary(doc, "Attack a trained FR model and measure privacy."),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="fr_model.pt from train_fr.py (or the env's save_fr_model)")
    p.add_argument("--data", default="att_faces", help="the data set the model was trained on (name or .npz path)")
    p.add_argument("--split", type=Path, default=None, help="npz with private_idx / public_idx (default: split.npz "
                   "beside the model)")
    p.add_argument("--attacks", nargs="+", default=list(DEFAULT_ATTACKS), choices=ATTACKS)
    p.add_argument("--identities", type=int, default=None, help="attack the first N private identities (default all)")
    p.add_argument("--judges", nargs="+", default=list(DEFAULT_JUDGES), choices=JUDGES,
                   help="who judges the reconstructions, the first heading the table: pretrained = dlib's face "
                   "recognizer (the judge extra), evaluator = a classifier trained on the private faces")
    p.add_argument("--evaluator", type=Path, default=None, help="evaluator checkpoint to reuse, or where to save a "
                   "new one (default: <out>/evaluator.pt)")
    p.add_argument("--gallery", type=Path, default=None, help="the pretrained judge's enrolled private faces to "
                   "reuse, or where to save them (default: <out>/judge_gallery.pt)")
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
    p.add_argument("--mix-weights", type=float, nargs="+", default=None,
                   help="how often the data-level attack draws each --mix-k (default: uniformly)")
    p.add_argument("--min-updates", type=int, default=MIN_UPDATES, help="fewest updates of every attack network "
                   "and of the evaluator, however few the faces")
    p.add_argument("--judge-min-updates", type=int, default=None, help="fewest updates of the evaluator and the "
                   "VAE prior, which are trained once and reused (default: --min-updates)")
    p.add_argument("--grid-identities", type=int, default=8, help="rows of the reconstruction grid")
    p.add_argument("--observed-epochs", type=int, default=10, help="training passes whose encodings the clustering "
                   "data-level attack (datalevel_cluster) sees")
    p.add_argument("--judged-per-identity", type=int, default=4, help="reconstructions judged per identity, drawn "
                   "at random where an attack made more (dlib's judge costs about 0.15 s a face)")
    p.add_argument("--eigen-components", type=int, default=AttackBudget().eigen_components,
                   help="basis size of whitebox_eigenface's prior (at most twice the public faces, less one)")
    p.add_argument("--whitebox-loss", default=AttackBudget().whitebox_loss, choices=WHITEBOX_LOSSES,
                   help="the white-box attacks' identity objective: margin (PLG-MI's max-margin) or ce "
                   "(cross-entropy, which saturates once the target is sure)")
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


def evaluate(argv: list[str] | None = None, doc: str | None = None) -> dict[str, Any]:
    """``examples/evaluate_privacy.py``: :func:`privacy.evaluate.evaluate_privacy` from a command line; prints the
    table and returns the report (see :func:`privacy.evaluate.exit_status` for the exit code)."""
    args = _evaluate_args(argv, doc)
    report = evaluate_privacy(args.model, args.data, args.attacks, args.budget, split=args.split,
                              judges=args.judges, evaluator=args.evaluator, gallery=args.gallery, prior=args.prior,
                              out=args.out, seed=args.seed, device=args.device, progress=not args.no_progress)
    print("\n" + format_report(report))
    print(f"saved {args.out / 'privacy.json'}, {args.out / 'reconstructions.png'}, "
          + ", ".join(j["path"] for j in report["judges"].values()))
    return report


# --- reproduce.py -----------------------------------------------------------------------------------------------
def _reproduce_args(argv: list[str] | None, doc: str | None, root: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=_summary(doc, "Run the defence grid and write its report."),
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
    p.add_argument("--judges", nargs="+", default=list(DEFAULT_JUDGES), choices=JUDGES,
                   help="who judges the reconstructions (see evaluate_privacy.py --judges)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    datasets = args.datasets or (["att_faces"] if args.quick else ["lfw", "att_faces", "extended_yaleb"])
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    try:
        args.config = GridConfig(datasets, args.defences, seeds, QUICK_ATTACKS if args.quick else GRID_ATTACKS,
                                 QUICK_AGENT if args.quick else AgentBudget(), args.epochs, args.work,
                                 progress=not args.no_progress, judges=tuple(args.judges))
    except ValueError as e:
        p.error(str(e))
    base = args.work / "quick" if args.quick else None
    args.cells = args.cells or (base / "cells" if base else root / "docs" / "results")
    args.report = args.report or (base / "RESULTS.md" if base else root / "docs" / "RESULTS.md")
    return args


def reproduce(argv: list[str] | None = None, doc: str | None = None, root: str | Path = ".") -> Path:
    """``examples/reproduce.py``: :func:`privacy.grid.run_grid` and :func:`privacy.results.write_report` from a
    command line; ``root`` is the repository whose ``docs/`` holds the committed cells and page."""
    args = _reproduce_args(argv, doc, Path(root))
    store = CellStore(args.cells)
    if not args.report_only:
        run_grid(args.config, store)
    path = write_report(store, args.report, DATASETS, GRID_DEFENCES)
    print(f"wrote {path}")
    failed = [c for c in sanity_checks(store.load()) if c["passed"] is False]
    for c in failed:
        print(f"sanity check FAILED on {c['data']}: {c['check']} ({c['defence']}) reached {c['measured']:.3f} top-1, "
              f"needs >= {c['threshold']:.2f}: {c['why']}", file=sys.stderr)
    if failed and not args.report_only:
        raise SystemExit(1)  # the cells and the page are kept: the attacks' budgets need raising
    return path


# --- pareto_report.py -------------------------------------------------------------------------------------------
def pareto(argv: list[str] | None = None, doc: str | None = None) -> list[dict[str, Any]]:
    """``examples/pareto_report.py``: the frontier over several ``privacy.json`` (:mod:`privacy.report`)."""
    p = argparse.ArgumentParser(description=_summary(doc, "The privacy-accuracy frontier over several models."))
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
