"""Attack a trained FR model and measure privacy: the model-inversion protocol of GMI / KED-MI / PLG-MI / MIBench.

    python examples/train_fr.py --data att_faces --image-size 64 --defence none --public-fraction 0.3 --out runs/att_none
    python examples/evaluate_privacy.py --model runs/att_none/fr_model.pt --data att_faces

The model must have been trained on the *private* side of an identity-disjoint split (``train_fr.py
--public-fraction``, which writes ``split.npz`` beside the model; or pass ``--split``). The attacker gets the model
(white-box: weights and the DCT/mask transform; black-box: queries) and the *public* faces only. An evaluation
classifier, trained on the private faces in the pixel domain with another architecture, judges every
reconstruction (``fr_models.attacks.evaluator``). Attacks (``--attacks``):

* ``whitebox_vae`` / ``whitebox_eigenface``: optimise the latent of a prior learned from the public faces (GMI);
* ``whitebox_pixels``: optimise the pixels, no prior (Fredrikson et al.; a reference point);
* ``blackbox_scores``: a decoder from score vectors to faces, trained by querying public faces, decodes each
  identity's class vector (Yang et al.);
* ``blackbox_embeddings``: the same from embeddings, decoding each identity's mean leaked embedding;
* ``datalevel``: recover the dominant face of each mixed, masked training input (the model's own ``k``; for a
  policy, k drawn as often as the policy chose it).

Writes ``privacy.json`` (metrics per attack, the privacy score, times, settings, and the model's utility from the
``metrics.json`` beside it), ``reconstructions.png`` (per identity, a real private face next to each attack's
reconstruction; the same images as uint8 arrays in ``reconstructions.npz``) and ``evaluator.pt`` (reused by later
runs on the same private identities), and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fr_models.attacks import (
    ATTACKS,
    BlackBoxOracle,
    EvaluationClassifier,
    VAEPrior,
    attack_metrics,
    fit_eigenfaces,
    fit_vae,
    invert,
    invert_class_vectors,
    invert_mean_outputs,
    observe_mixes,
    plot_reconstruction_grid,
    privacy_score,
    train_evaluator,
    train_output_decoder,
    train_unmixer,
    unmix,
)
from fr_models.attacks._loop import MIN_UPDATES
from fr_models.attacks.target import load_target
from fr_models.data import check_identity_split, images_to_tensor, load_faces
from fr_models.memory import peak_rss_mib
from fr_models.trainer import atomic_write
from mixup_env import mix_batch
from mixup_env.transform import input_transform

DEFAULT_ATTACKS = ("whitebox_vae", "whitebox_pixels", "blackbox_scores", "blackbox_embeddings", "datalevel")


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
    for name in ("min_updates", "evaluator_epochs", "prior_epochs", "steps", "restarts", "views", "decoder_epochs", "unmix_epochs",
                 "grid_identities"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.judge_min_updates is None:
        args.judge_min_updates = args.min_updates
    elif args.judge_min_updates < 1:
        p.error("--judge-min-updates must be >= 1")
    if args.identities is not None and args.identities < 2:
        p.error("--identities must be >= 2")
    if args.mix_k is not None and min(args.mix_k) < 1:
        p.error("--mix-k values must be >= 1")
    return args


def data_level_k(meta: dict[str, Any], override: list[int] | None) -> list[int] | None:
    """The k values of the model's own defence (``None``: the server sees raw faces, no data-level attack)."""
    if override is not None:
        return list(override)
    if meta.get("input") == "pixel":
        return None
    defence = meta.get("defence")
    if defence == "fixed":
        return [int(meta["k"])]
    if defence in ("random", "policy"):
        return [int(k) for k in meta["k_values"]]
    return [1]


def data_level_weights(meta: dict[str, Any], ks: list[int]) -> list[float] | None:
    """How often the model's training chose each of ``ks``: a policy records it (``k_distribution``); ``None``
    (uniform) otherwise. The attacker simulates the defence as it ran, not as it might have."""
    dist = meta.get("k_distribution")
    if not dist:
        return None
    return [float(dist.get(str(k), 0.0)) for k in ks]


def make_mix(k_values: list[int], weights: list[float] | None = None):
    """The defence's mixing as a :data:`fr_models.attacks.datalevel.MixFunction`: k drawn from ``k_values`` with
    probabilities proportional to ``weights`` (``None``: uniform)."""
    ks = torch.tensor(k_values)
    p = torch.ones(len(ks)) if weights is None else torch.tensor(weights, dtype=torch.float)
    if len(p) != len(ks) or not bool((p >= 0).all()) or float(p.sum()) <= 0:
        raise ValueError(f"need one non-negative weight per k, not all 0, got {weights} for k {k_values}")

    def mix(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # drawn on the generator's device (the data-level attack gives one on the faces' device: CUDA there)
        pick = (torch.randint(len(ks), (len(x),), generator=gen, device=gen.device) if weights is None
                else torch.multinomial(p.to(gen.device), len(x), replacement=True, generator=gen))
        k = ks.to(gen.device)[pick].clamp(max=len(x)).to(x.device)
        r = mix_batch(x, torch.zeros(len(x), dtype=torch.long, device=x.device), k, 1, 1.0, gen)
        return r.inputs, r.partners, r.weights

    return mix


def vae_prior(args: argparse.Namespace, x_pub: torch.Tensor, public_names: list[str], progress: bool) -> VAEPrior:
    """The VAE prior of the public faces: reused from ``--prior`` if it was fitted to the same public identities
    at the same image size (it depends on nothing else), else trained and saved there."""
    path = args.prior or args.out / "vae_prior.pt"
    if path.is_file():
        prior, trained_on = VAEPrior.load(path, args.device)
        if trained_on == list(public_names) and prior.image_size == tuple(x_pub.shape[-2:]):
            print(f"VAE prior: reused {path}")
            return prior
        print(f"VAE prior: {path} was fitted to other public faces; training a new one")
    t0 = time.perf_counter()
    prior = fit_vae(x_pub, epochs=args.prior_epochs, seed=args.seed, device=args.device, progress=progress,
                    min_updates=args.judge_min_updates)
    prior.save(path, list(public_names))
    print(f"VAE prior: trained in {time.perf_counter() - t0:.0f} s, saved {path}")
    return prior


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    progress = not args.no_progress
    torch.manual_seed(args.seed)
    target = load_target(args.model, input_transform, args.device)
    meta = target.metadata
    faces = load_faces(args.data)
    split_path = args.split or args.model.parent / "split.npz"
    if not split_path.is_file():
        raise FileNotFoundError(f"no split file {str(split_path)!r}: train the model with train_fr.py --public-fraction "
                                "(it writes split.npz beside the model) or pass --split")
    with np.load(split_path) as z:
        if "private_idx" not in z.files or "public_idx" not in z.files:
            raise ValueError(f"{str(split_path)!r} has no private/public split ({sorted(z.files)}): the model was "
                             "trained on every identity, so no face is left for the attacker; retrain it with "
                             "train_fr.py --public-fraction")
        private_idx, public_idx = z["private_idx"], z["public_idx"]
    check_identity_split(faces.labels, private_idx, public_idx, faces.names)
    priv, pub = faces.subset(private_idx), faces.subset(public_idx)
    if priv.num_classes != target.num_classes:
        raise ValueError(f"the model has {target.num_classes} classes but the split's private side of {faces.source!r} "
                         f"has {priv.num_classes} identities: wrong --data or --split for this model?")
    if target.class_names and priv.names and list(target.class_names) != list(priv.names):
        raise ValueError(f"the model's identities ({target.class_names[:3]}...) are not the split's private side "
                         f"({priv.names[:3]}...): wrong --data or --split for this model?")
    size = target.image_size
    x_priv, y_priv = images_to_tensor(priv.images, size), torch.from_numpy(priv.labels)
    x_pub = images_to_tensor(pub.images, size)
    n_ids = priv.num_classes if args.identities is None else min(args.identities, priv.num_classes)
    classes = torch.arange(n_ids)
    judged = torch.isin(y_priv, classes)
    args.out.mkdir(parents=True, exist_ok=True)
    names = priv.names or [str(c) for c in range(priv.num_classes)]

    ev_path = args.evaluator or args.out / "evaluator.pt"
    if ev_path.is_file():
        evaluator = EvaluationClassifier.load(ev_path, args.device)
        if evaluator.class_names != names or evaluator.image_size != size:
            raise ValueError(f"the evaluator {str(ev_path)!r} was trained on other identities or another image "
                             "size; pass a new --evaluator path to train one for this split")
        print(f"evaluator: reused {ev_path} (held-out top-1 {evaluator.val_accuracy:.3f})")
    else:
        t0 = time.perf_counter()
        evaluator = train_evaluator(x_priv, y_priv, names, epochs=args.evaluator_epochs, seed=args.seed,
                                    device=args.device, progress=progress, min_updates=args.judge_min_updates)
        evaluator.save(ev_path)
        print(f"evaluator: trained in {time.perf_counter() - t0:.0f} s, held-out top-1 {evaluator.val_accuracy:.3f}")

    results: dict[str, dict[str, Any]] = {}
    shown: dict[str, torch.Tensor] = {}
    grid_ids = classes[: args.grid_identities]

    x_judged, y_judged = x_priv[judged], y_priv[judged]
    f_judged = evaluator.features(x_judged)

    def record(name: str, res, seconds: float, extra: dict[str, Any]) -> None:
        m = attack_metrics(evaluator, res.images, res.classes, x_judged, y_judged, f_judged)
        results[name] = {**m, "seconds": seconds, "peak_rss_mb": peak_rss_mib(), **extra}
        cells = torch.full((len(grid_ids), *res.images.shape[1:]), float("nan"))
        for r, c in enumerate(grid_ids):
            hit = (res.classes == c).nonzero()
            if len(hit):
                cells[r] = res.images[hit[0, 0]]
        shown[name] = cells
        print(f"  {name}: top-1 {m['top1']:.3f} ({m['top1_over_chance']:.1f}x chance), top-5 {m['top5']:.3f}, "
              f"{seconds:.0f} s", flush=True)

    priors: dict[str, Any] = {}
    for attack in args.attacks:
        t0 = time.perf_counter()
        if attack.startswith("whitebox"):
            kind = attack.split("_", 1)[1]
            prior = None
            if kind == "vae":
                prior = priors.get("vae") or vae_prior(args, x_pub, pub.names, progress)
                priors["vae"] = prior
            elif kind == "eigenface":
                if "eigenface" not in priors:  # fitted once, for every attack that uses it
                    priors["eigenface"] = fit_eigenfaces(x_pub).to(args.device)
                prior = priors["eigenface"]
            res = invert(target, classes, prior, restarts=args.restarts, steps=args.steps, views=args.views,
                         seed=args.seed, progress=progress, public_images=x_pub if prior is not None else None)
            record(attack, res, time.perf_counter() - t0, {"threat_model": "white-box", **res.info,
                                                           "target_confidence": float(res.target_confidence.mean())})
        elif attack.startswith("blackbox"):
            oracle = BlackBoxOracle(target, "probabilities" if attack == "blackbox_scores" else "embedding")
            dec = train_output_decoder(oracle, x_pub, epochs=args.decoder_epochs, views_per_image=4, seed=args.seed,
                                       device=args.device, progress=progress, min_updates=args.min_updates)
            if attack == "blackbox_scores":
                res = invert_class_vectors(dec, classes, target.num_classes)
            else:
                res = invert_mean_outputs(dec, oracle(x_judged), y_judged)
            record(attack, res, time.perf_counter() - t0, {"threat_model": "black-box", **res.info,
                                                           "queries": oracle.queries})
        else:
            ks = data_level_k(meta, args.mix_k)
            if ks is None:
                results[attack] = {"skipped": "a pixel-domain model is trained on the raw faces: the server sees "
                                   "them, there is nothing to recover"}
                print(f"  {attack}: skipped (pixel-domain model)")
                continue
            transform = target.transform  # the white-box transform the model already carries
            weights = data_level_weights(meta, ks) if args.mix_k is None else None
            mix = make_mix(ks, weights)
            unmixer = train_unmixer(x_pub, transform, mix, epochs=args.unmix_epochs, seed=args.seed,
                                    device=args.device, progress=progress, min_updates=args.min_updates)
            observed, dominant, weight = observe_mixes(x_judged.to(args.device), transform, mix, seed=args.seed + 1)
            res = unmix(unmixer, observed, y_judged[dominant.cpu()])
            record(attack, res, time.perf_counter() - t0, {"threat_model": "data-level", "k_values": ks,
                                                           "k_weights": weights,
                                                           "dominant_weight": float(weight.mean())})

    scored = {k: v for k, v in results.items() if "top1" in v}
    report: dict[str, Any] = {
        "model": str(args.model), "data": faces.source, "defence": meta.get("defence"), "k": meta.get("k"), "input": meta.get("input"),
        "private_identities": priv.num_classes, "attacked_identities": n_ids,
        "public_identities": pub.num_classes, "public_images": len(pub.labels),
        "evaluator": {"path": str(ev_path), "held_out_top1": evaluator.val_accuracy},
        "attacks": results, "privacy_score": privacy_score(scored) if scored else None,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    metrics_path = args.model.parent / "metrics.json"
    if metrics_path.is_file():
        report["utility"] = json.loads(metrics_path.read_text()).get("identification")
    atomic_write(args.out / "privacy.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    if shown:
        real = torch.stack([x_priv[(y_priv == c).nonzero()[0, 0]] for c in grid_ids])
        plot_reconstruction_grid(real, shown, [names[c] for c in grid_ids], args.out / "reconstructions.png",
                                 f"{Path(faces.source).stem}: defence {meta.get('defence')}, {meta.get('input')} model")
        as_uint8 = {name: (imgs.nan_to_num(0.0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                    for name, imgs in {"real": real, **shown}.items()}
        atomic_write(args.out / "reconstructions.npz", lambda tmp: np.savez_compressed(tmp, **as_uint8))
    print(f"\n{'attack':<22}{'top-1':>7}{'x chance':>9}{'top-5':>7}{'KNN':>7}{'PSNR':>7}{'SSIM':>7}{'s':>7}")
    for name, m in scored.items():
        print(f"{name:<22}{m['top1']:>7.3f}{m['top1_over_chance']:>9.1f}{m['top5']:>7.3f}{m['knn_dist']:>7.3f}"
              f"{m['psnr']:>7.2f}{m['ssim']:>7.3f}{m['seconds']:>7.0f}")
    if report["privacy_score"] is not None:
        print(f"privacy score {report['privacy_score']:.3f} (1 = nothing recognisable recovered)")
    print(f"saved {args.out / 'privacy.json'}, {args.out / 'reconstructions.png'}, {ev_path}")
    return report


def exit_status(report: dict[str, Any]) -> int:
    """The exit code of a run: 0 when at least one attack was measured and its figures are finite, else 1 (and why,
    on stderr): a run that measured nothing, or measured NaN, must not look like a success to a script or CI."""
    scored = {k: v for k, v in report["attacks"].items() if "top1" in v}
    if not scored:
        print("evaluate_privacy.py: no attack measured anything (every one was skipped)", file=sys.stderr)
        return 1
    bad = [k for k, v in scored.items() if not all(math.isfinite(float(v[m])) for m in ("top1", "top5", "knn_dist"))]
    if bad:
        print(f"evaluate_privacy.py: non-finite figures from {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main()))
