"""Train an FR model on a data set under a defence, evaluate it, and write a JSON of metrics plus the model.

    python examples/train_fr.py --data att_faces --image-size 64 --defence none        # pixel-domain baseline
    python examples/train_fr.py --data att_faces --image-size 64 --defence mask        # frequency masking only
    python examples/train_fr.py --data lfw --image-size 64 --defence fixed --k 3
    python examples/train_fr.py --data lfw --image-size 64 --defence random
    python examples/train_fr.py --defence policy --policy runs/ppo/ppo_agent.zip --policy-algo ppo
    python examples/train_fr.py --data lfw --image-size 64 --defence none --public-fraction 0.367  # attack target
    python examples/train_fr.py --data lfw --image-size 64 --defence dpsgd --noise-multiplier 1.0
    python examples/train_fr.py --data lfw --image-size 64 --defence nls --smoothing -0.05

With ``--public-fraction`` the identities are split first (identity-disjoint, seeded): the model trains on the
private identities only, and ``split.npz`` records both sides (``private_idx``, ``public_idx``, indices into the
data set), which is what ``examples/evaluate_privacy.py`` needs to attack the model.

The training, the defences and the metrics are :func:`privacy.defences.train_fr_model`'s (see
:mod:`privacy.defences`); this script is its command line. Metrics: closed-set identification top-1/top-5 on
held-out images of the training identities beside the chance levels, time per training epoch, and for LFW the
10-fold verification on the official pairs (all pairs, and apart those whose identities were not in training).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fr_models.backbones import BACKBONES
from fr_models.data import load_faces
from fr_models.recipes import RECIPES, default_recipe, get_recipe
from mixup_env.transform import COLOURS, UPSAMPLE_FACTORS
from privacy.defences import DEFENCES, POLICY_ALGOS, DefenceSpec, PolicySpec, train_fr_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    if args.defence == "policy" and args.policy is None:
        p.error("--defence policy needs --policy PATH")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    try:
        args.spec = defence_spec(args)
    except ValueError as e:
        p.error(str(e))
    if args.backbone is not None and args.backbone not in BACKBONES:
        p.error(f"unknown backbone {args.backbone!r}; known backbones: {', '.join(BACKBONES)}")
    if (args.backbone == "pixel") != (args.defence == "none") and args.backbone in ("pixel", "grid", "unblock"):
        p.error("the pixel backbone goes with --defence none, the frequency backbones (grid, unblock) with the others; "
                "resnet goes with every defence")
    return args


def defence_spec(args: argparse.Namespace) -> DefenceSpec:
    """The command line's defence."""
    policy = PolicySpec(args.policy, args.policy_algo, args.policy_env_id) if args.defence == "policy" else None
    return DefenceSpec(args.defence, k=args.k, k_values=tuple(args.k_values), policy=policy,
                       noise_multiplier=args.noise_multiplier, max_grad_norm=args.max_grad_norm, delta=args.delta,
                       smoothing=args.smoothing)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
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


if __name__ == "__main__":
    main()
