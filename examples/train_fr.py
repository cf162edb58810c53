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

Defences: none (pixels, no masking, no mixing); dct (the block DCT with every channel kept: the undefended
frequency-domain model); mask (frequency masking, no mixing); fixed (masking + k-way
mixing with a fixed k); random (k drawn per sample from --k-values); policy (a saved mixing agent chooses k,
through the env); and two standard model-inversion defences on the undefended frequency input (all channels, as
dct): dpsgd (DP-SGD through Opacus, ``fr_models.dp``; the model's batch norms become group norms) and nls
(negative label smoothing, Struppek et al. 2024: soft labels ``(1 - a) * onehot + a / C`` with ``a`` ramped from
0 to ``--smoothing`` < 0 over the first half of training). Metrics: closed-set identification top-1/top-5 on
held-out images of the training identities,
time per training epoch, and for LFW the 10-fold verification on the official pairs, reported for all pairs and
apart for pairs whose identities were not in training. This is the utility half of every later comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fr_models import FRTrainer, extract_embeddings, identification_accuracy, images_to_tensor
from fr_models.backbones import BACKBONES
from fr_models.data import load_faces, load_lfw_pairs, split_identities, split_per_identity
from fr_models.evaluation import balanced_accuracy, chance_levels, verification_scores, verify_kfold
from fr_models.dp import fit_dp
from fr_models.recipes import RECIPES, default_recipe, get_recipe
from fr_models.training import calibration_subset, channel_stats, fit
from mixup_env import ChannelMask, FrequencyMasking, mix_batch
from mixup_env.transform import COLOURS, UPSAMPLE_FACTORS, input_metadata

DEFENCES = ("none", "dct", "mask", "fixed", "random", "policy", "dpsgd", "nls")
#: defences whose input is the block DCT with every channel kept (no masking)
ALL_CHANNELS = ("dct", "dpsgd", "nls")


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
    p.add_argument("--policy-algo", default="reinforce", choices=["reinforce", "ppo", "a2c", "sac"])
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
    if args.defence == "nls" and not -1 < args.smoothing < 0:
        p.error(f"--smoothing must lie in (-1, 0) for negative label smoothing, got {args.smoothing}")
    if args.defence == "dpsgd" and not (args.noise_multiplier > 0 and args.max_grad_norm > 0 and 0 < args.delta < 1):
        p.error("--noise-multiplier and --max-grad-norm must be > 0 and --delta in (0, 1)")
    if args.backbone is not None and args.backbone not in BACKBONES:
        p.error(f"unknown backbone {args.backbone!r}; known backbones: {', '.join(BACKBONES)}")
    if (args.backbone == "pixel") != (args.defence == "none") and args.backbone in ("pixel", "grid", "unblock"):
        p.error("the pixel backbone goes with --defence none, the frequency backbones (grid, unblock) with the others; "
                "resnet goes with every defence")
    return args


def resolve_recipe(args: argparse.Namespace, source: str):
    """The recipe named by ``--recipe`` (or the data's default) with the command line's settings applied; the
    resolved settings are written back into ``args``."""
    recipe = get_recipe(args.recipe or default_recipe(source)).replace(
        backbone=args.backbone, widths=None if args.widths is None else tuple(args.widths),
        blocks=None if args.blocks is None else tuple(args.blocks), embedding_dim=args.embedding_dim, head=args.head,
        upsample=args.upsample, image_size=args.image_size, lr=args.lr, weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule, batch_size=args.batch_size, epochs=args.epochs, hflip=args.hflip,
        max_shift=args.max_shift, dropout=args.dropout)
    if args.defence == "none" and recipe.backbone in ("grid", "unblock"):
        recipe = recipe.replace(backbone="pixel")  # a legacy frequency recipe: its pixel counterpart
    if args.defence != "none" and recipe.backbone == "pixel":
        recipe = recipe.replace(backbone="grid")
    for name in ("backbone", "head", "image_size", "epochs", "batch_size", "lr", "hflip", "max_shift", "upsample"):
        setattr(args, name, getattr(recipe, name))
    return recipe


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    faces = data = load_faces(args.data)
    recipe = resolve_recipe(args, faces.source)
    split: dict[str, np.ndarray] = {}
    if args.public_fraction is not None:
        split_seed = args.seed if args.split_seed is None else args.split_seed
        split["private_idx"], split["public_idx"] = split_identities(data.labels, args.public_fraction, split_seed)
        faces = data.subset(split["private_idx"])
    train_idx, test_idx = split_per_identity(faces.labels, args.test_fraction, args.seed)
    labels = torch.from_numpy(faces.labels).to(args.device)
    dropped = () if args.defence in ALL_CHANNELS else None  # every channel kept (frequency domain, no mask)
    try:
        mask = ChannelMask(dropped, planes=faces.planes)
        masking = FrequencyMasking(mask, args.upsample, args.colour).to(args.device)
        if args.defence != "none":
            masking.output_size(args.image_size or faces.image_shape)
    except ValueError as e:
        raise SystemExit(f"train_fr.py: {e}") from None
    storage = getattr(torch, args.storage)
    pixel = args.defence == "none"
    flip = (lambda x: x.flip(-1)) if pixel else masking.hflip
    test_flip = flip if args.flip_test else None

    def prepare(images: np.ndarray) -> torch.Tensor:
        out = []
        for i in range(0, len(images), 256):
            x = images_to_tensor(images[i : i + 256], args.image_size).to(args.device)
            out.append((x if pixel else masking(x)).to(storage))
        return torch.cat(out)

    inputs = prepare(faces.images)
    x_train, y_train = inputs[train_idx], labels[train_idx]
    progress = not args.no_progress
    extra: dict = {}
    if args.defence == "policy":
        trainer, epoch_seconds, k_counts = train_with_policy(args, faces, len(train_idx))
        extra["k_distribution"] = {str(k): c / sum(k_counts.values()) for k, c in sorted(k_counts.items())}
    else:
        try:
            config = recipe.fr_config(inputs.shape[1:], faces.num_classes, "pixel" if pixel else "frequency",
                                      "group" if args.defence == "dpsgd" else "batch")
            trainer = FRTrainer(config, args.device, seed=args.seed)
        except ValueError as e:
            raise SystemExit(f"train_fr.py: {e}") from None
        trainer.backbone.set_input_stats(*channel_stats(x_train))
        ks = torch.tensor(args.k_values, device=args.device)

        def mix(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            if args.defence == "fixed":
                k = args.k
            else:
                k = ks[torch.randint(len(ks), (len(y),), generator=gen, device=args.device)]
            r = mix_batch(x, y, k, faces.num_classes, 1.0, gen)
            return r.inputs, r.soft_labels

        # a shift by one map position is 8 / upsample pixels of the face: pixel models shift by that distance
        max_shift = args.max_shift * (8 // args.upsample if pixel and args.backbone == "resnet" else 1)
        if args.defence == "dpsgd":
            history = fit_dp(trainer, x_train, y_train, args.epochs, args.batch_size, args.seed, args.noise_multiplier,
                             args.max_grad_norm, args.delta, flip=flip if args.hflip else None, progress=progress)
            extra["dp"] = {k: v for k, v in history.items() if k not in ("epoch_seconds", "epoch_losses")}
        else:
            targets_fn = mix if args.defence in ("fixed", "random") else None
            if args.defence == "nls":
                targets_fn = negative_smoothing(args.smoothing, faces.num_classes,
                                                args.epochs * (len(train_idx) // args.batch_size))
            history = fit(trainer, x_train, y_train, args.epochs, args.batch_size, args.seed, mix=targets_fn,
                          flip=flip if args.hflip else None, progress=progress, max_shift=max_shift)
        epoch_seconds = history["epoch_seconds"]
        # batch-norm statistics of clean training faces, not of the mixes (a no-op for DP-SGD's group norms)
        if args.recalibrate_norms:
            calib = torch.from_numpy(calibration_subset(len(x_train), args.seed)).to(args.device)
            trainer.recalibrate_norms(x_train[calib])

    trainer.metadata = {**input_metadata(None if pixel else masking,
                                         args.image_size or faces.image_shape),
                        "class_names": list(faces.names), "defence": args.defence,
                        "k": args.k if args.defence == "fixed" else None, "k_values": list(args.k_values),
                        **({"k_distribution": extra["k_distribution"]} if "k_distribution" in extra else {})}
    emb = extract_embeddings(trainer.backbone, inputs[test_idx], progress=progress, device=args.device, flip=test_flip)
    trainer.head.eval()
    with torch.no_grad():
        logits = trainer.head.logits(emb.to(args.device)).cpu()
    y_test = faces.labels[test_idx]
    chance = chance_levels(faces.labels[train_idx], y_test, faces.num_classes)
    metrics: dict = {
        "data": faces.source, "defence": args.defence, "backbone": args.backbone, "head": args.head,
        "image_size": args.image_size, "epochs": args.epochs, "num_identities": faces.num_classes,
        "train_images": len(train_idx), "test_images": len(test_idx),
        "public_identities": int(len(np.unique(data.labels[split["public_idx"]]))) if split else 0,
        "identification": {**identification_accuracy(logits, y_test), "balanced": balanced_accuracy(logits, y_test)},
        "chance": chance,
        "chance_top1": chance["uniform"],
        "flip_test": bool(args.flip_test),
        "recipe": {**recipe.as_dict(), "upsample": None if pixel else args.upsample,
                   "colour": None if pixel else masking.colour, "storage": args.storage},
        "seconds_per_epoch": float(np.median(epoch_seconds)),
        "epoch_seconds": [float(t) for t in epoch_seconds],
        "updates": trainer.updates,
        **extra,
    }
    if Path(faces.source).name == "lfw.npz":
        metrics["verification"] = verify_lfw(trainer, faces, prepare, Path(faces.source).parent, progress, test_flip)
    args.out.mkdir(parents=True, exist_ok=True)
    trainer.save(args.out / "fr_model.pt")
    np.savez(args.out / "split.npz", train_idx=train_idx, test_idx=test_idx, seed=args.seed, **split)
    metrics["args"] = {k: str(v) for k, v in vars(args).items()}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    ident = metrics["identification"]
    print(f"{args.defence:>7} {args.backbone:>7}: top-1 {ident['top1']:.4f}  top-5 {ident['top5']:.4f}  balanced "
          f"{ident['balanced']:.4f}  (chance: uniform {chance['uniform']:.4f}, majority class "
          f"{chance['majority_class']:.4f})  {metrics['seconds_per_epoch']:.2f} s/epoch")
    for part, res in metrics.get("verification", {}).items():
        if isinstance(res, dict):
            print(f"  LFW verification, {part}: {res['accuracy_mean']:.4f} ± {res['accuracy_std']:.4f} over "
                  f"{res['num_pairs']} pairs, AUC {res['roc_auc']:.4f}")
    print(f"  saved {args.out / 'metrics.json'}, {args.out / 'fr_model.pt'}, {args.out / 'split.npz'}")
    return metrics


def verify_lfw(trainer: FRTrainer, faces, prepare, folder: Path, progress: bool, flip=None) -> dict:
    """10-fold verification on the official pairs: all pairs, and apart those whose identities were not trained on
    (with ``flip``, on flip-test embeddings)."""
    pairs_data = load_lfw_pairs(folder)
    p = pairs_data.pairs
    emb = extract_embeddings(trainer.backbone, prepare(pairs_data.images), progress=progress, flip=flip)
    scores = verification_scores(emb[p.idx1], emb[p.idx2])
    trained = set(faces.names)
    names = np.asarray(pairs_data.names)
    unseen = ~(np.isin(names[pairs_data.labels[p.idx1]], list(trained)) | np.isin(names[pairs_data.labels[p.idx2]], list(trained)))
    out = {"note": "'all' includes pairs of identities seen in training; 'unseen_identities' excludes every pair "
                   "with an identity from the training set (all 158 training identities occur in the LFW pairs)",
           "all": verify_kfold(scores, p.same, p.fold).as_dict()}
    if unseen.sum() and p.same[unseen].any() and (~p.same[unseen]).any():
        out["unseen_identities"] = verify_kfold(scores[unseen], p.same[unseen], p.fold[unseen]).as_dict()
    return out


def negative_smoothing(final: float, num_classes: int, updates: int):
    """Negative label smoothing as a :data:`fr_models.training.MixFn` (the faces are left as they are): soft labels
    ``(1 - a) * onehot + a / C``, ``a`` ramped linearly from 0 to ``final`` over the first half of ``updates`` and
    kept there (Struppek et al. 2024 start from positive or zero smoothing and turn negative during training)."""
    step = [0]

    def smooth(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a = final * min(1.0, step[0] / max(1.0, updates / 2))
        step[0] += 1
        onehot = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)
        return x, (1 - a) * onehot + a / num_classes

    return smooth


def train_with_policy(args: argparse.Namespace, faces, n_train: int) -> tuple[FRTrainer, list[float], dict[int, int]]:
    """A saved agent chooses k through the env for ``epochs`` worth of FR updates; also returns how often it chose
    each k (over every mixed face)."""
    import gymnasium as gym

    from agents import ALGORITHMS, Reinforce, load_obs_normalizer, run_episode

    steps = args.epochs * (n_train // args.batch_size)
    env = gym.make(args.policy_env_id, data=faces, k_values=tuple(args.k_values), episode_steps=steps,
                   eval_every=steps, test_fraction=args.test_fraction, split_seed=args.seed, device=args.device,
                   recipe=args.recipe or default_recipe(faces.source), image_size=args.image_size,
                   batch_size=args.batch_size, backbone=args.backbone, widths=args.widths, blocks=args.blocks,
                   embedding_dim=args.embedding_dim, head=args.head, upsample=args.upsample, colour=args.colour,
                   lr=args.lr, weight_decay=args.weight_decay, lr_schedule=args.lr_schedule, hflip=args.hflip,
                   max_shift=args.max_shift, storage=args.storage)
    if args.policy_algo == "reinforce":
        agent, normalize_obs = Reinforce.load(args.policy, env), None
    else:  # an SB3 model trained with --normalize sees observations through its saved statistics
        agent, normalize_obs = ALGORITHMS[args.policy_algo].load(args.policy), load_obs_normalizer(args.policy, env)
    t0 = time.perf_counter()
    episode = run_episode(agent, env, seed=args.seed, normalize_obs=normalize_obs)
    print(f"  policy {args.policy} ({args.policy_algo}): observations "
          f"{'normalised by its saved VecNormalize statistics' if normalize_obs else 'as the env gives them'}")
    per_epoch = (time.perf_counter() - t0) / args.epochs
    ks, counts = np.unique(np.concatenate([np.asarray(i["k_per_sample"]).reshape(-1) for i in episode.infos]),
                           return_counts=True)
    return env.unwrapped.trainer, [per_epoch] * args.epochs, {int(k): int(c) for k, c in zip(ks, counts)}


if __name__ == "__main__":
    main()
