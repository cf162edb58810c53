"""Reproduce the paper's claim on real faces: every defence, data set and seed, attacked and evaluated; writes
``docs/RESULTS.md``.

    export MIXUP_ENV_DATA=../shared/data
    python examples/reproduce.py                  # the full grid (about 2 h on 2 CPU cores), resumable
    python examples/reproduce.py --quick          # a reduced grid in minutes: AT&T, one seed, smaller attacks
    python examples/reproduce.py --report-only    # rewrite docs/RESULTS.md from the finished cells alone

A *cell* is one (data set, defence, seed): an FR model trained on the private identities, its identification
accuracy (and LFW verification), and every attack of ``examples/evaluate_privacy.py`` on it. Each finished cell is
a small JSON file (``docs/results/<data>__<defence>__s<seed>.json``, with thumbnails of its reconstructions), so
an interrupted run picks up where it stopped, the grid can be completed over several sittings, and the document
is regenerated from the cells without recomputing anything. A cell whose settings changed is recomputed. Models,
agents, the evaluator and the prior live in ``--work`` (not in the repository).

Defences (all train the same grid backbone on the same private split for the same number of updates):
``none`` (the block DCT with all 64 channels: an orthonormal transform of the face, i.e. undefended), ``mask``
(PPFR-FD masking), ``fixed2`` .. ``fixed6``, ``random`` (k uniform in 2..6 per face), ``reinforce`` / ``ppo`` /
``sac`` (a policy trained on the env on the private faces chooses k per face), ``dpsgd`` (Opacus; noise 1.0,
clipping 1.0, delta 1e-5; group norm instead of batch norm) and ``nls`` (negative label smoothing -0.05).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fr_models.attacks._loop import MIN_UPDATES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = Path(__file__).resolve().parent

#: per data set: image size, attacker's share of identities, training epochs (the same for every defence)
DATASETS: dict[str, dict[str, Any]] = {
    "lfw": {"image_size": 64, "public_fraction": 0.367, "epochs": 20},
    "att_faces": {"image_size": 64, "public_fraction": 0.3, "epochs": 100},
    "extended_yaleb": {"image_size": 64, "public_fraction": 0.3, "epochs": 20},
    "synthetic": {"image_size": None, "public_fraction": 0.3, "epochs": 2},  # for the tests only
}
#: defence name -> train_fr.py arguments (policies add their agent)
#: the env id each policy acts on (train_fr.py's --policy-env-id defaults to the per-sample discrete one)
POLICY_ENV_IDS: dict[str, str] = {"reinforce": "mixup_env/FrequencyMixupPerSample-v0",
                                  "ppo": "mixup_env/FrequencyMixupPerSample-v0",
                                  "sac": "mixup_env/FrequencyMixupPerSampleContinuous-v0"}
DEFENCES: dict[str, list[str]] = {
    "none": ["--defence", "dct"],
    "mask": ["--defence", "mask"],
    **{f"fixed{k}": ["--defence", "fixed", "--k", str(k)] for k in range(2, 7)},
    "random": ["--defence", "random"],
    "reinforce": ["--defence", "policy", "--policy-algo", "reinforce"],
    "ppo": ["--defence", "policy", "--policy-algo", "ppo"],
    "sac": ["--defence", "policy", "--policy-algo", "sac", "--policy-env-id", POLICY_ENV_IDS["sac"]],
    "dpsgd": ["--defence", "dpsgd", "--noise-multiplier", "1.0", "--max-grad-norm", "1.0", "--delta", "1e-5"],
    "nls": ["--defence", "nls", "--smoothing", "-0.05"],
}
POLICIES = ("reinforce", "ppo", "sac")
FIXED = tuple(f"fixed{k}" for k in range(2, 7))
MODEL_ATTACKS = ("whitebox_vae", "whitebox_eigenface", "whitebox_pixels", "blackbox_scores", "blackbox_embeddings")
ATTACKS = (*MODEL_ATTACKS, "datalevel")
HEADLINE = "whitebox_vae"
#: attack settings of the grid (``evaluate_privacy.py`` options), and of ``--quick``
ATTACK_SETTINGS: dict[str, Any] = {"identities": 20, "steps": 100, "restarts": 2, "views": 2, "decoder_epochs": 2,
                                   "unmix_epochs": 2, "min_updates": 60, "evaluator_epochs": 20,
                                   "prior_epochs": 30}
QUICK_ATTACKS: dict[str, Any] = {"identities": 10, "steps": 30, "restarts": 1, "views": 2, "decoder_epochs": 2,
                                 "unmix_epochs": 2, "min_updates": 60, "evaluator_epochs": 5, "prior_epochs": 5}
#: policy training on the env (steps = FR updates of the agent's own training runs), per data set and seed
AGENT_SETTINGS: dict[str, Any] = {"timesteps": 1200, "episode_steps": 300}
QUICK_AGENT: dict[str, Any] = {"timesteps": 100, "episode_steps": 50}
THUMB = 28  # side of the reconstruction thumbnails kept in the cells
THUMB_IDS = 4


def _load_example(name: str):
    """Import a sibling example script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=None, help="data sets (default: lfw att_faces extended_yaleb; "
                   "--quick: att_faces)")
    p.add_argument("--defences", nargs="+", default=list(DEFENCES), choices=list(DEFENCES))
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
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.datasets = args.datasets or (["att_faces"] if args.quick else ["lfw", "att_faces", "extended_yaleb"])
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        p.error(f"unknown data set(s) {unknown}; accepted: {', '.join(DATASETS)}")
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    base = args.work / "quick" if args.quick else None
    args.cells = args.cells or (base / "cells" if base else ROOT / "docs" / "results")
    args.report = args.report or (base / "RESULTS.md" if base else ROOT / "docs" / "RESULTS.md")
    args.attack = dict(QUICK_ATTACKS if args.quick else ATTACK_SETTINGS)
    args.agent = dict(QUICK_AGENT if args.quick else AGENT_SETTINGS)
    # the evaluator and the prior are trained once per data set (by its first cell) and judge every cell: the
    # cells' small min_updates keeps the per-cell attack networks fast, but would leave the judges of AT&T's few
    # faces half trained
    args.judge_updates = args.attack["min_updates"] if args.quick else MIN_UPDATES
    return args


# --- the grid --------------------------------------------------------------------------------------------------
def data_settings(args: argparse.Namespace, data: str) -> dict[str, Any]:
    s = dict(DATASETS[data])
    if args.epochs is not None:
        s["epochs"] = args.epochs
    return s


def cell_settings(args: argparse.Namespace, data: str, defence: str, seed: int) -> dict[str, Any]:
    """Everything that decides a cell's result; a cell computed under other settings is recomputed."""
    s = {"data": data, "defence": defence, "seed": seed, "train": data_settings(args, data),
         "defence_args": DEFENCES[defence], "attacks": args.attack, "identity_split_seed": 0}
    if defence in POLICIES:
        s["agent"] = args.agent
    return s


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def cell_path(cells: Path, data: str, defence: str, seed: int) -> Path:
    return cells / f"{data}__{defence}__s{seed}.json"


def write_json(path: Path, obj: Any) -> None:
    from fr_models.trainer import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n"))


def finished(path: Path, settings: dict[str, Any]) -> bool:
    """Whether ``path`` holds a cell computed under ``settings`` (an unreadable file counts as unfinished)."""
    try:
        return json.loads(path.read_text()).get("settings_hash") == settings_hash(settings)
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def thumbnails(images: np.ndarray) -> str:
    """The first :data:`THUMB_IDS` faces ``(R, C, H, W)`` uint8 as base64 of ``THUMB x THUMB`` uint8 grey images."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images[:THUMB_IDS]).float().mean(1, keepdim=True)
    small = F.interpolate(x, size=(THUMB, THUMB), mode="area").round().clamp(0, 255).to(torch.uint8)
    return base64.b64encode(small.numpy().tobytes()).decode()


def decode_thumbnails(text: str, side: int = THUMB) -> np.ndarray:
    """``(n, side, side)`` uint8 images from :func:`thumbnails`."""
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(-1, side, side)


def train_agent(args: argparse.Namespace, data: str, algo: str, seed: int, path: Path) -> float:
    """Train a mixing policy on the env over the private faces (the defender's own data); returns seconds."""
    import gymnasium as gym

    import mixup_env  # noqa: F401
    from agents import Reinforce, make_agent, make_vec_env, save_agent
    from fr_models.data import load_faces, split_identities

    s = data_settings(args, data)
    faces = load_faces(data)
    private_idx, _ = split_identities(faces.labels, s["public_fraction"], 0)
    private = faces.subset(private_idx)
    env_id = POLICY_ENV_IDS[algo]
    kwargs = dict(data=private, image_size=s["image_size"], episode_steps=args.agent["episode_steps"],
                  eval_every=args.agent["episode_steps"], hflip=True, split_seed=seed, recipe="legacy",
                  storage="float32", recalibrate_norms=False)
    t0 = time.perf_counter()
    if algo == "reinforce":
        agent = Reinforce(gym.make(env_id, **kwargs), seed=seed)
        agent.learn(args.agent["timesteps"], seed=seed, progress_bar=not args.no_progress)
        agent.save(path)
    else:
        venv = make_vec_env(env_id, 1, seed, kwargs)
        overrides: dict[str, Any] = {"learning_starts": min(200, args.agent["timesteps"] // 4)} if algo == "sac" else {}
        model = make_agent(algo, venv, seed=seed, **overrides)
        model.learn(total_timesteps=args.agent["timesteps"], progress_bar=not args.no_progress)
        save_agent(model, path)
        venv.close()
    return time.perf_counter() - t0


def judge_paths(args: argparse.Namespace, data: str) -> tuple[Path, Path]:
    """Where the data set's evaluator and VAE prior live (shared by every cell of the data set)."""
    work = args.work / data
    return (work / f"evaluator_e{args.attack['evaluator_epochs']}.pt",
            work / f"vae_prior_e{args.attack['prior_epochs']}.pt")


def run_cell(args: argparse.Namespace, data: str, defence: str, seed: int) -> dict[str, Any]:
    """Train, evaluate and attack one cell; returns its record (written by the caller)."""
    train_fr, evaluate_privacy = _load_example("train_fr"), _load_example("evaluate_privacy")
    s = data_settings(args, data)
    work = args.work / data
    out = work / f"{defence}_s{seed}"
    record: dict[str, Any] = {}
    # the grid keeps the models it was computed with (fr_models.recipes "legacy") until it is rerun on the new ones
    train_argv = ["--data", data, "--recipe", "legacy", "--no-recalibrate-norms",
                  "--public-fraction", str(s["public_fraction"]),
                  "--epochs", str(s["epochs"]),
                  "--hflip", "--seed", str(seed), "--split-seed", "0", "--out", str(out), *DEFENCES[defence]]
    if s["image_size"]:
        train_argv += ["--image-size", str(s["image_size"])]
    if args.no_progress:
        train_argv.append("--no-progress")
    if defence in POLICIES:
        agent_path = work / "agents" / f"{defence}_s{seed}.{'pt' if defence == 'reinforce' else 'zip'}"
        record["agent_seconds"] = round(train_agent(args, data, defence, seed, agent_path), 1)
        train_argv += ["--policy", str(agent_path)]
    t0 = time.perf_counter()
    metrics = train_fr.main(train_argv)
    record["train_seconds"] = round(time.perf_counter() - t0, 1)
    a = args.attack
    ev_path, prior_path = judge_paths(args, data)
    attack_argv = ["--model", str(out / "fr_model.pt"), "--data", data, "--attacks", *ATTACKS, "--seed", str(seed),
                   "--evaluator", str(ev_path), "--prior", str(prior_path),
                   "--judge-min-updates", str(args.judge_updates),
                   "--out", str(out / "privacy"), "--grid-identities", str(THUMB_IDS)]
    for key, value in a.items():
        attack_argv += [f"--{key.replace('_', '-')}", str(value)]
    if args.no_progress:
        attack_argv.append("--no-progress")
    t0 = time.perf_counter()
    report = evaluate_privacy.main(attack_argv)
    record["attack_seconds"] = round(time.perf_counter() - t0, 1)
    from fr_models.attacks import privacy_score

    attacks = report["attacks"]
    keep = ("top1", "top5", "top1_over_chance", "knn_dist", "knn_dist_other", "psnr", "ssim", "seconds")
    shown = np.load(out / "privacy" / "reconstructions.npz")
    record.update({
        "utility": {"top1": metrics["identification"]["top1"], "top5": metrics["identification"]["top5"],
                    "chance_top1": metrics["chance_top1"], "updates": metrics["updates"]},
        "attacks": {name: {k: round(float(m[k]), 4) for k in keep} for name, m in attacks.items() if "top1" in m},
        "privacy_model": privacy_score({k: v for k, v in attacks.items() if k in MODEL_ATTACKS}),
        "privacy_all": report["privacy_score"],
        "evaluator_top1": report["evaluator"]["held_out_top1"],
        "attacked_identities": report["attacked_identities"],
        "private_identities": report["private_identities"],
        "thumbnails": {name: thumbnails(shown[name]) for name in (HEADLINE, "datalevel") if name in shown.files},
        "real_thumbnails": thumbnails(shown["real"]),
        "thumbnail_size": THUMB,
    })
    verification = metrics.get("verification", {})
    for part in ("all", "unseen_identities"):
        if part in verification:
            record["utility"][f"lfw_verification_{part}"] = verification[part]["accuracy_mean"]
    if "dp" in metrics:
        record["dp"] = metrics["dp"]
    if "k_distribution" in metrics:
        dist = metrics["k_distribution"]
        record["k_distribution"] = dist
        record["mean_k"] = sum(int(k) * p for k, p in dist.items())
    return record


def run_grid(args: argparse.Namespace) -> None:
    """Compute every unfinished cell (in data set, seed, defence order), writing each as soon as it is done."""
    from tqdm.auto import tqdm

    todo, done = [], 0
    for data in args.datasets:
        for seed in args.seeds:
            for defence in args.defences:
                settings = cell_settings(args, data, defence, seed)
                if finished(cell_path(args.cells, data, defence, seed), settings):
                    done += 1
                else:
                    todo.append((data, defence, seed, settings))
    print(f"grid: {done + len(todo)} cells, {done} finished, {len(todo)} to compute", flush=True)
    bar = tqdm(todo, desc="cells", disable=args.no_progress, position=0)
    for data, defence, seed, settings in bar:
        bar.set_postfix_str(f"{data} {defence} seed {seed}")
        t0 = time.perf_counter()
        record = run_cell(args, data, defence, seed)
        record.update({"settings": settings, "settings_hash": settings_hash(settings),
                       "cell_seconds": round(time.perf_counter() - t0, 1),
                       "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        write_json(cell_path(args.cells, data, defence, seed), record)
        print(f"cell {data} {defence} seed {seed}: top-1 {record['utility']['top1']:.3f}, privacy (model) "
              f"{record['privacy_model']:.3f}, (all) {record['privacy_all']:.3f}, {record['cell_seconds']:.0f} s",
              flush=True)


# --- the report ------------------------------------------------------------------------------------------------
def load_cells(cells: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(cells.glob("*__*__s*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            print(f"skipping unreadable cell {path}: {e}", file=sys.stderr)
    return out


def _ms(values: list[float], digits: int = 3) -> str:
    """``mean ± std`` (std over seeds, ddof 1; a single value is shown alone)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def summarise(cells: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """data set -> defence -> lists over seeds of every figure the report shows."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for c in cells:
        s = c["settings"]
        d = out.setdefault(s["data"], {}).setdefault(s["defence"], {"seeds": [], "cells": []})
        d["seeds"].append(s["seed"])
        d["cells"].append(c)
    for defences in out.values():
        for d in defences.values():
            cs = d["cells"]
            d["top1"] = [c["utility"]["top1"] for c in cs]
            d["privacy_model"] = [c["privacy_model"] for c in cs]
            d["privacy_all"] = [c["privacy_all"] for c in cs]
            d["mean_k"] = [c["mean_k"] for c in cs if "mean_k" in c]
    return out


def _order(defences: dict[str, Any]) -> list[str]:
    return [d for d in DEFENCES if d in defences]


def verdict(data: str, defences: dict[str, dict[str, Any]], collect: dict[str, Any] | None = None) -> list[str]:
    """Plain-language findings for one data set, computed from the means over seeds.

    :param collect: if given, filled with ``dominated`` (names) and ``policies`` (name -> outcome: ``beats``,
        ``ties``, ``less private`` or ``more accurate than every fixed k``) for the summary at the top."""
    collect = {} if collect is None else collect
    collect["policies"] = {}
    from fr_models.attacks import pareto_dominated

    names = _order(defences)
    mean = {n: (float(np.mean(defences[n]["top1"])), float(np.mean(defences[n]["privacy_model"]))) for n in names}
    std = {n: (float(np.std(defences[n]["top1"], ddof=1)) if len(defences[n]["top1"]) > 1 else 0.0,
               float(np.std(defences[n]["privacy_model"], ddof=1)) if len(defences[n]["top1"]) > 1 else 0.0)
           for n in names}
    lines = []
    dom = pareto_dominated([mean[n] for n in names])
    front = [n for n, d in zip(names, dom) if not d]
    collect["dominated"] = [n for n, d in zip(names, dom) if d]
    lines.append(f"- **Frontier** (top-1 vs model-inversion privacy, means over seeds): {', '.join(front)}. "
                 f"**Dominated**: {', '.join(n for n, d in zip(names, dom) if d) or 'none'}.")
    dom_all = pareto_dominated([(mean[n][0], float(np.mean(defences[n]['privacy_all']))) for n in names])
    lines.append(f"- Counting the data-level attack too (a server that sees the training inputs), dominated: "
                 f"{', '.join(n for n, d in zip(names, dom_all) if d) or 'none'}.")
    fixed = [n for n in FIXED if n in mean]
    for pol in (p for p in POLICIES if p in mean):
        acc, priv = mean[pol]
        tol = max(std[pol][0], 0.01)
        matched = [f for f in fixed if mean[f][0] >= acc - tol]
        dist = {}
        for c in defences[pol]["cells"]:
            for k, p in c.get("k_distribution", {}).items():
                dist[k] = dist.get(k, 0.0) + p / len(defences[pol]["cells"])
        habit = policy_habit(dist, float(np.mean(defences[pol]["mean_k"])) if dist else 0.0)
        if not matched:
            best = max(fixed, key=lambda f: mean[f][0]) if fixed else None
            ref = (f"no fixed k is as accurate (the most accurate, {best}, reaches top-1 {mean[best][0]:.3f} "
                   f"at privacy {mean[best][1]:.3f})") if best else "no fixed k was run"
            lines.append(f"- **{pol}** (top-1 {acc:.3f}, privacy {priv:.3f}): {ref}; {habit}.")
            collect["policies"][pol] = "more accurate than every fixed k"
            continue
        best = max(matched, key=lambda f: mean[f][1])
        gap = priv - mean[best][1]
        noise = max(std[pol][1], std[best][1], 0.01)
        if gap > noise:
            word, collect["policies"][pol] = "**beats**", "beats"
        elif gap < -noise:
            word, collect["policies"][pol] = "**does not beat**: it is less private than", "less private"
        else:
            word, collect["policies"][pol] = "**does not beat**: it ties, within the seeds' spread, with", "ties"
        lines.append(f"- **{pol}** (top-1 {acc:.3f}, privacy {priv:.3f}) {word} the best fixed k at matched "
                     f"accuracy, {best} (top-1 {mean[best][0]:.3f}, privacy {mean[best][1]:.3f}; difference "
                     f"{gap:+.3f}, spread {noise:.3f}); {habit}.")
    return lines


def policy_habit(dist: dict[str, float], mean_k: float) -> str:
    """What a policy's k choices (share of faces per k, averaged over seeds) say, in words."""
    if not dist:
        return "its k choices were not recorded"
    top_k = max(dist, key=dist.get)
    share = dist[top_k]
    if share >= 0.9:
        return f"it collapsed to one k: k = {top_k} for {share:.0%} of the faces (mean k {mean_k:.2f})"
    if share < 1 / len(dist) + 0.1:
        return (f"its choices stayed close to uniform over k (the most frequent, k = {top_k}, for {share:.0%} of "
                f"the faces; mean k {mean_k:.2f}): it learned little from the reward")
    return f"it chose k = {top_k} for {share:.0%} of the faces (mean k {mean_k:.2f})"


def grid_figure(data: str, defences: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Reconstructions of seed 0: per defence a row of the headline attack's and the data-level attack's images."""
    from matplotlib.figure import Figure

    from fr_models.trainer import atomic_write

    rows = [(n, next((c for c in defences[n]["cells"] if c["settings"]["seed"] == min(defences[n]["seeds"])), None))
            for n in _order(defences)]
    rows = [(n, c) for n, c in rows if c and c.get("thumbnails")]
    if not rows:
        return None
    real = decode_thumbnails(rows[0][1]["real_thumbnails"], rows[0][1].get("thumbnail_size", THUMB))
    n = len(real)
    fig = Figure(figsize=(2 * n * 0.75 + 1.5, (len(rows) + 1) * 0.8 + 0.6))
    axes = fig.subplots(len(rows) + 1, 2 * n, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for j in range(n):
        axes[0][j].imshow(real[j], cmap="gray", vmin=0, vmax=255)
        axes[0][n + j].imshow(real[j], cmap="gray", vmin=0, vmax=255)
    axes[0][0].set_ylabel("real", fontsize=7)
    axes[0][0].set_title(f"{HEADLINE} (white-box + prior)", fontsize=7, loc="left")
    axes[0][n].set_title("datalevel (server sees inputs)", fontsize=7, loc="left")
    for r, (name, c) in enumerate(rows, start=1):
        axes[r][0].set_ylabel(name, fontsize=7)
        for block, attack in enumerate((HEADLINE, "datalevel")):
            if attack in c["thumbnails"]:
                for j, img in enumerate(decode_thumbnails(c["thumbnails"][attack], c.get("thumbnail_size", THUMB))):
                    axes[r][block * n + j].imshow(img, cmap="gray", vmin=0, vmax=255)
    fig.suptitle(f"{data}: reconstructions of the first {n} attacked private identities (seed 0)", fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform(), "cpus": str(os.cpu_count())}
    for mod in ("torch", "torchvision", "numpy", "scipy", "gymnasium", "stable_baselines3", "opacus"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is reported, not fatal
            out[mod] = "not installed"
    return out


def write_report(args: argparse.Namespace) -> Path:
    """``RESULTS.md`` from the cells in ``args.cells`` alone (plus figures beside it, under ``img/``)."""
    from fr_models.attacks import plot_pareto
    from fr_models.trainer import atomic_write

    cells = load_cells(args.cells)
    if not cells:
        raise FileNotFoundError(f"no finished cells in {str(args.cells)!r}: run the grid first")
    table = summarise(cells)
    img = args.report.parent / "img"
    rel = os.path.relpath(img, args.report.parent)
    n_seeds = sorted({c["settings"]["seed"] for c in cells})
    total_s = sum(c.get("cell_seconds", 0.0) for c in cells)
    L = ["# Results: does adaptive mixing beat fixed mixing and the standard defences?", "",
         "Written by `python examples/reproduce.py` from the cells in "
         f"`{os.path.relpath(args.cells, args.report.parent)}/` ({len(cells)} cells; seeds {n_seeds}; compute "
         f"{total_s / 3600:.2f} h summed over cells). Every number below comes from those files; rerun with "
         "`--report-only` to rewrite this page without recomputing.", "",
         "**How to read it.** Utility: closed-set identification top-1 on held-out faces of the private "
         "identities (and, for LFW, 10-fold verification accuracy on the official pairs whose identities were "
         "not trained on). Privacy: each attack's evaluator top-1 on its reconstructions (an independent "
         "classifier trained on the private faces judges them); *privacy (model)* = 1 - the largest "
         "chance-corrected leakage over the white-box and black-box attacks on the trained model (the "
         "model-inversion threat, headline: white-box with the VAE prior); *privacy (all)* also counts the "
         "data-level attack on the mixed training inputs. 1 = nothing recognisable recovered. Means ± std over "
         "seeds. `none` is the block DCT with all channels kept: an orthonormal transform of the face, "
         "i.e. undefended, on the same architecture as every other defence.", ""]
    brief: list[str] = []
    brief_at = len(L)
    for data in sorted(table, key=lambda d: list(DATASETS).index(d)):  # the main data set (LFW) first
        defences = table[data]
        L += [f"## {data}", ""]
        any_cell = next(iter(defences.values()))["cells"][0]
        s = any_cell["settings"]
        lfw = any("lfw_verification_unseen_identities" in c["utility"] for d in defences.values() for c in d["cells"])
        L.append(f"{any_cell['private_identities']} private identities (chance top-1 "
                 f"{any_cell['utility']['chance_top1']:.3f}), {s['train']['epochs']} epochs = "
                 f"{any_cell['utility']['updates']} updates per model; attacks on {any_cell['attacked_identities']} "
                 f"identities; evaluator held-out top-1 {any_cell['evaluator_top1']:.3f}.")
        L.append("")
        head = ["defence", "seeds", "top-1"] + (["LFW verif. (unseen)"] if lfw else []) + \
               [f"{a} top-1" for a in ATTACKS] + ["privacy (model)", "privacy (all)", "notes"]
        L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in _order(defences):
            d = defences[name]
            cs = d["cells"]
            row = [name, str(len(cs)), _ms(d["top1"])]
            if lfw:
                row.append(_ms([c["utility"].get("lfw_verification_unseen_identities", np.nan) for c in cs]))
            row += [_ms([c["attacks"][a]["top1"] for c in cs if a in c["attacks"]]) for a in ATTACKS]
            row += [_ms(d["privacy_model"]), _ms(d["privacy_all"])]
            notes = []
            if d["mean_k"]:
                notes.append(f"mean k {_ms(d['mean_k'], 2)}")
            if any("dp" in c for c in cs):
                notes.append(f"ε {_ms([c['dp']['epsilon'] for c in cs], 1)} (δ {cs[0]['dp']['delta']:g})")
            row.append("; ".join(notes))
            L.append("| " + " | ".join(row) + " |")
        L.append("")
        pareto = img / f"results_pareto_{data}.png"
        names = _order(defences)
        plot_pareto(names, [float(np.mean(defences[n]["top1"])) for n in names],
                    [float(np.mean(defences[n]["privacy_model"])) for n in names], pareto,
                    ylabel="privacy (model): 1 - leakage of the strongest model attack")
        L += [f"![{data}: privacy-accuracy frontier]({rel}/{pareto.name})", ""]
        grid = grid_figure(data, defences, img / f"results_reconstructions_{data}.png")
        if grid is not None:
            L += [f"![{data}: reconstructions]({rel}/{grid.name})", ""]
        found: dict[str, Any] = {}
        L += ["**Verdict**", "", *verdict(data, defences, found), ""]
        brief.append(f"- **{data}**: Pareto-dominated: {', '.join(found['dominated']) or 'none'}. Adaptive policies "
                     "against the best fixed k at matched accuracy: " + (", ".join(
                         f"{p} {o}" for p, o in found["policies"].items()) or "no policy run") + ".")
        L += ["<details><summary>Every attack's metrics (means over seeds)</summary>", "",
              "| defence | attack | top-1 | top-5 | × chance | KNN own / other | PSNR | SSIM |",
              "|---|---|---|---|---|---|---|---|"]
        for name in names:
            for a in ATTACKS:
                ms = [c["attacks"][a] for c in defences[name]["cells"] if a in c["attacks"]]
                if ms:
                    m = {k: float(np.mean([x[k] for x in ms])) for k in ms[0]}
                    L.append(f"| {name} | {a} | {m['top1']:.3f} | {m['top5']:.3f} | {m['top1_over_chance']:.1f} | "
                             f"{m['knn_dist']:.3f} / {m['knn_dist_other']:.3f} | {m['psnr']:.2f} | {m['ssim']:.3f} |")
        L += ["", "</details>", ""]
    L[brief_at:brief_at] = ["## Verdict in brief", "",
                            "Computed from the tables below (privacy against the model-inversion attacks; 'matched "
                            "accuracy' = a fixed k at least as accurate, within the policy's spread over seeds or "
                            "one point of top-1; 'beats' = more private by more than the seeds' spread). Why a policy "
                            "does what it does is in each data set's verdict (its k choices).", "", *brief, ""]
    first = cells[0]["settings"]
    L += ["## Configuration", "",
          "Per data set (`DATASETS` in `examples/reproduce.py`): " + "; ".join(
              f"{d}: {json.dumps(DATASETS[d])}" for d in table) + ".", "",
          f"Attacks (`evaluate_privacy.py` options): `{json.dumps(first['attacks'])}`. "
          f"Policies: `{json.dumps(next((c['settings']['agent'] for c in cells if 'agent' in c['settings']), {}))}` "
          "(env steps of the agent's own training on the private faces, then one FR training run of the grid's "
          "length under the trained policy, which is the cell's model).", "",
          f"Evaluator and VAE prior: trained once per data set on the identity split of seed 0 (evaluator: private "
          f"faces; prior: public faces) for at least {MIN_UPDATES} updates in the full grid; every cell reuses "
          "them. The attack "
          "budgets are smaller than `docs/privacy.md`'s single-model runs (fewer identities, steps, restarts and "
          "decoder passes), to keep the grid's compute (measured below) small: the absolute leakage is a lower "
          "bound, the comparison between defences is like for like.", "",
          "Compute per data set (summed over its cells, agents included): " + "; ".join(
              f"{d}: {sum(c.get('cell_seconds', 0.0) for dd in table[d].values() for c in dd['cells']) / 60:.0f} min"
              for d in table) + ".", "",
          "Defences (`train_fr.py` arguments): " + "; ".join(f"{n}: `{' '.join(a)}`" for n, a in DEFENCES.items()) +
          ". Identity split seed 0 for every cell (the seed varies the model's initialisation, batch order, mixing "
          "and the attacks); batch 64, AdamW lr 1e-3, mirroring, grid backbone, softmax head.", "",
          "Versions (of the machine that wrote this page): "
          + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
          "", f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", ""]
    return atomic_write(args.report, lambda tmp: tmp.write_text("\n".join(L)))


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if not args.report_only:
        run_grid(args)
    path = write_report(args)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
