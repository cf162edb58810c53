"""``docs/privacy.md``: single models per defence, attacked at full strength, the page written from their cells.

The models are the parity issue's (recipe ``real``: ResNet body, CosFace, mirroring and shifts, batch-norm
statistics recalibrated on clean faces; LFW 40 epochs, AT&T 100, as ``benchmarks/bench_fr.py``), trained on the
defence grid's identity split (seed 0), one per (data set, defence), and attacked with the full
:class:`~privacy.evaluate.AttackBudget` on every private identity, judged by the pretrained judge and by the
in-house evaluator. The runs are cells of a :class:`~privacy.grid.GridConfig` (:func:`page_config`), so they are
computed, stored and resumed exactly as the grid's (``benchmarks/privacy_page.py``); :func:`write_privacy_page`
writes the page from the cells alone.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fr_models.system import versions
from fr_models.trainer import atomic_write
from privacy.evaluate import JUDGES, AttackBudget
from privacy.grid import ATTACKS, GRID_DEFENCES, CellStore, DataSettings, GridConfig, run_grid
from privacy.kstudy import kstudy_rows, policy_schemes
from privacy.results import check_row, defence_order, grid_figure, matched_gains, sanity_checks, summarise

__all__ = ["PAGE_DATA", "PAGE_DEFENCES", "kstudy_store", "page_config", "run_page", "sweep_store",
           "write_privacy_page"]

#: The page's data sets: image size, the attacker's share of identities (the grid's split), training epochs.
PAGE_DATA: dict[str, DataSettings] = {"lfw": DataSettings(64, 0.367, 40), "att_faces": DataSettings(64, 0.3, 100)}
#: The page's defences (names of :data:`privacy.grid.GRID_DEFENCES`).
PAGE_DEFENCES = ("pixel", "none", "mask", "fixed2", "fixed6")


def page_config(work: str | Path = "runs/privacy_page", datasets: tuple[str, ...] = tuple(PAGE_DATA),
                defences: tuple[str, ...] = PAGE_DEFENCES, attack: AttackBudget = AttackBudget(),
                progress: bool = True) -> GridConfig:
    """The page's runs as a grid: seed 0, recipe ``real``, the full attack budget, both judges."""
    return GridConfig(datasets, defences, (0,), attack, work=Path(work), recipe="real", data_settings=PAGE_DATA,
                      defence_specs={d: GRID_DEFENCES[d] for d in defences}, progress=progress, judges=JUDGES,
                      recalibrate_norms=True)


def sweep_store(store: CellStore) -> CellStore:
    """Where the page's DP-SGD sweep points live: ``dpsgd_sweep/`` inside the page's cells."""
    return CellStore(store.root / "dpsgd_sweep")


def kstudy_store(store: CellStore) -> CellStore:
    """Where the page's data-level study of the mixing schemes lives: ``kstudy/`` inside the page's cells."""
    return CellStore(store.root / "kstudy")


def run_page(config: GridConfig, store: CellStore, dpsgd: bool = True, noise: Sequence[float] | None = None,
             kstudy: bool = True, policies: str | Path | None = None, schemes: Sequence[Any] | None = None) -> None:
    """Compute the page's unfinished cells; then, with ``dpsgd``, per data set DP-SGD's noise sweep
    (:func:`privacy.sweep.sweep_dpsgd`, training only, over ``noise``: default
    :data:`~privacy.sweep.DP_NOISE`) and, if a swept noise learns above the majority class, the ``dpsgd`` cell at
    that noise, attacked as every other; then, with ``kstudy``, per data set the data-level attacks against each
    mixing scheme (:mod:`privacy.kstudy`: fixed k = 2..6, uniform k, and the k distributions of the grid's policy
    cells in ``policies``, if given; ``schemes``: other :class:`~privacy.kstudy.Scheme` s in place of the fixed and
    uniform ones)."""
    from privacy.kstudy import default_schemes, run_kstudy

    run_grid(config, store)
    if dpsgd:
        _run_dpsgd(config, store, noise)
    if kstudy:
        for data in config.datasets:
            extra = policy_schemes(policies, data)[0] if policies is not None else []
            run_kstudy(config, data, kstudy_store(store), [*(default_schemes() if schemes is None else schemes),
                                                            *extra])


def _run_dpsgd(config: GridConfig, store: CellStore, noise: Sequence[float] | None) -> None:
    from privacy.sweep import DP_NOISE, compared_spec, sweep_dpsgd

    for data in config.datasets:
        try:
            spec = compared_spec(sweep_dpsgd(config, data, sweep_store(store), DP_NOISE if noise is None else noise))
        except ValueError as e:  # a recipe DP-SGD cannot train: the page's other cells stand, the page is written
            print(f"dpsgd: not swept on {data}: {e}", file=sys.stderr, flush=True)
            continue
        if spec is None:
            print(f"dpsgd: no swept noise learns above the majority class on {data}; no dpsgd cell", flush=True)
            continue
        run_grid(dataclasses.replace(config, datasets=(data,), defences=("dpsgd",),
                                     defence_specs={**config.defence_specs, "dpsgd": spec}), store)


def _sweep_rows(store: CellStore, data: str) -> list[str]:
    """The page's table of DP-SGD's sweep points on ``data`` (none: no rows)."""
    points = sorted((p for p in sweep_store(store).load() if p["settings"]["data"] == data),
                    key=lambda p: -p["noise_multiplier"])
    if not points:
        return []
    rows = ["DP-SGD's noise sweep (training only; the largest noise first, stopped at the first that learns: its "
            "top-1 interval above the majority class; that point is the `dpsgd` model attacked above):", "",
            "| noise multiplier | epsilon (delta) | top-1 (95 % interval) | majority class | learns | training |",
            "|---|---|---|---|---|---|"]
    for p in points:
        lo, hi = p["top1_interval"]
        rows.append(f"| {p['noise_multiplier']:g} | {p['epsilon']:.1f} ({p['delta']:g}) | {p['top1']:.3f} "
                    f"({lo:.3f}-{hi:.3f}) | {p['chance']['majority_class']:.3f} | {'yes' if p['learns'] else 'no'} | "
                    f"{p['train_seconds'] / 60:.0f} min |")
    return [*rows, ""]


#: What the attacks are: the part of the page that does not come from the cells.
THREATS: tuple[str, ...] = (
    "## Threat models and attacks", "",
    "| | the attacker has | attacks |", "|---|---|---|",
    "| **white-box** | the model's weights and its input transform (block DCT and channel mask for a defended model); "
    "gradients flow from the scores through the head, backbone, mask and DCT to the image | `whitebox_vae`, "
    "`whitebox_eigenface`, `whitebox_pixels` |",
    "| **black-box** | queries only: images in, class probabilities or embeddings out | `blackbox_scores`, "
    "`blackbox_embeddings` |",
    "| **data-level** | the training inputs a server sees (each a Dirichlet-weighted sum of k masked faces), the "
    "scheme (mask, k, weights) and public faces | `datalevel` (one mix at a time), `datalevel_cluster` (the whole "
    "training run) |", "",
    "- `whitebox_vae` (GMI-style): the latent of a VAE fitted to the public faces is optimised so the target names "
    "the identity, averaged over random views, with a prior penalty; `whitebox_eigenface`: the same on a PCA basis "
    "of the public faces; `whitebox_pixels` (Fredrikson et al. 2015): the pixels themselves, with total-variation "
    "and norm penalties. Each optimises the budget's `whitebox_loss` (PLG-MI's max-margin objective by default: "
    "the cross-entropy saturates once the target is sure, long before the image shows the identity).",
    "- `blackbox_scores` (Yang et al. 2019): a decoder from the returned (truncated) score vectors back to the "
    "public faces, applied to each identity's class vector; `blackbox_embeddings`: the same from embeddings, "
    "applied to each identity's mean leaked embedding.",
    "- `datalevel`: a network trained on simulated mixes of public faces maps each observed mix to its dominant "
    "face. `datalevel_cluster` (Carlini et al. 2020 on InstaHide): the encodings of `observed_epochs` training "
    "passes, centred on the public faces' mean, projected and clustered (spherical k-means, one cluster per "
    "training face); each face restored from its cluster's mean and decoded by a network trained on the public "
    "faces. With all channels and k = 1 the input is an orthonormal transform of the face: the first sanity check.",
    "",
)


def _attack_rows(cell: dict[str, Any]) -> list[str]:
    rows = ["| attack | top-1, pretrained judge (95 % interval) | top-5 | top-1, evaluator | KNN own / other | PSNR | "
            "SSIM | s |", "|---|---|---|---|---|---|---|---|"]
    for a in ATTACKS:
        m = cell["attacks"].get(a)
        if m is None:
            rows.append(f"| {a} | skipped | | | | | | |")
            continue
        lo, hi = m["intervals"]["top1"]
        ev = m.get("judges", {}).get("evaluator", {}).get("top1")
        rows.append(f"| {a} | {m['top1']:.3f} ({lo:.3f}-{hi:.3f}) | {m['top5']:.3f} | "
                    f"{'–' if ev is None else f'{ev:.3f}'} | {m['knn_dist']:.3f} / {m['knn_dist_other']:.3f} | "
                    f"{m['psnr']:.2f} | {m['ssim']:.3f} | {m['seconds']:.0f} |")
    ceilings = cell.get("prior_ceilings") or {}
    if ceilings:
        rows += ["", "Ceilings of the white-box priors (each judge's top-1 on the private faces encoded and decoded "
                 "by the prior: the most a reconstruction confined to it can score): " + "; ".join(
                     f"{kind}: " + ", ".join(f"{j} {v:.3f}" for j, v in c.items()) for kind, c in ceilings.items())
                 + "."]
    return rows


def _utility_note(u: dict[str, Any]) -> str:
    """`` (95 % a-b over n test faces; top-5 t; chance: uniform u, majority class m)`` of a cell's utility (the parts
    it records)."""
    parts = []
    if u.get("top1_interval"):
        lo, hi = u["top1_interval"]
        parts.append(f"95 % {lo:.3f}-{hi:.3f}" + (f" over {u['test_images']} held-out faces" if u.get("test_images")
                                                   else ""))
    parts.append(f"top-5 {u['top5']:.3f}")
    if u.get("chance"):
        ch = u["chance"]
        parts.append(f"chance: uniform {ch['uniform']:.3f}, majority class {ch['majority_class']:.3f}")
    return " (" + "; ".join(parts) + ")"


def write_privacy_page(store: CellStore, path: str | Path, command: str = "benchmarks/privacy_page.py",
                       policies: str | Path | None = None, budget: AttackBudget | None = None) -> Path:
    """``docs/privacy.md`` from the page's cells in ``store`` (figures beside it under ``img/``); ``policies``: the
    grid's cells, whose one-k policies the data-level study names; ``budget``: the page's attack budget, where
    given the cells attacked under another one are left out of the tables and named as stale (a run recomputes
    them), so one page never mixes two budgets.

    :raises FileNotFoundError: the store holds no cell.
    """
    path = Path(path)
    cells = store.require(f"run {command} first")
    current = [budget is None or c["settings"]["attacks"] == budget.as_dict() for c in cells]
    stale = [c for c, ok in zip(cells, current) if not ok]
    cells = [c for c, ok in zip(cells, current) if ok]
    table = summarise(cells) if cells else {}
    first = cells[0] if cells else stale[0]
    L = ["# Privacy: model-inversion attacks on FR models a person would deploy", "",
         f"Written by `MIXUP_ENV_DATA=../shared/data python3 {command}` from the cells in "
         f"`{os.path.relpath(store.root, path.parent)}/` ({len(cells)} of "
         f"{len(PAGE_DATA) * len(PAGE_DEFENCES)} models; every figure below is read from them, never typed). "
         "`--report-only` rewrites the page from the cells.", "",
         "**Protocol.** One model per defence, trained on the private identities of the grid's split (seed 0) with "
         "the `real` recipe (the parity issue's models). Every private identity is attacked; each attack's "
         "reconstructions (at most `judged_per_identity` per identity) are judged by dlib's pretrained face "
         "recognizer, which never saw these faces (`privacy.attacks.pretrained`; its own top-1 on the real private "
         "faces is the ceiling of every figure, `docs/judge.md`), and by the in-house evaluator trained on the "
         "private faces. Intervals: bootstrap 95 % over the reconstructions. Threat models and attacks: "
         "`privacy/attacks/` (`datalevel`: one mix at a time; `datalevel_cluster`: the training run's encodings "
         "clustered per face, Carlini et al.'s attack on InstaHide).", "",
         f"Attack budget: `{first['settings']['attacks'] if budget is None else budget.as_dict()}`.", "",
         "## Sanity checks", "", "| check | data set | defence | measured | needed | |", "|---|---|---|---|---|---|",
         *[check_row(c) for c in sanity_checks(cells) if c["data"] in table], ""]
    if first["settings"]["data"] == "synthetic":
        L[2:2] = ["**Synthetic faces (a test run): these figures say nothing about real faces.**", ""]
    L += list(THREATS)
    img = path.parent / "img"
    missing = [f"{d} {n}" for d in PAGE_DATA for n in PAGE_DEFENCES if n not in table.get(d, {})]
    if missing and first["settings"]["data"] != "synthetic":
        L += [f"**Not yet computed** (the run continues where it stopped): {', '.join(missing)}.", ""]
    if stale:
        L += ["**Stale** (attacked under another budget; left out of this page, recomputed by the next run): "
              + ", ".join(f"{c['settings']['data']} {c['settings']['defence']}" for c in stale) + ".", ""]
    for data in sorted(table, key=lambda d: list(PAGE_DATA).index(d) if d in PAGE_DATA else len(PAGE_DATA)):
        defences = table[data]
        any_cell = defences[next(iter(defences))]["cells"][0]
        ch = any_cell["chance"]
        judges = "; ".join(f"{n}: top-1 {any_cell['judges'][n]['accuracy_on_private_faces']:.3f} on the private "
                           "faces" for n in any_cell["settings"]["judges"])
        L += [f"## {data}", "", f"{any_cell['private_identities']} private identities, all attacked; chance: uniform "
              f"{ch['uniform']:.3f}, majority class {ch['majority']:.3f}. Judges: {judges}.", ""]
        for name in defence_order(defences):
            c = defences[name]["cells"][0]
            u = c["utility"]
            L += [f"### {data}, {name}: identification top-1 {u['top1']:.3f}{_utility_note(u)}; privacy "
                  f"(model) {c['privacy_model']:.3f}, (all) {c['privacy_all']:.3f}", "", *_attack_rows(c), "",
                  (f"Training {c['train_seconds'] / 60:.0f} min, " if c.get("train_seconds") else
                   "Training time not recorded (a model trained by an interrupted run, reused), ")
                  + f"attacks {c.get('attack_seconds', 0) / 60:.0f} min on this machine.", ""]
        L += _sweep_rows(store, data)
        L += kstudy_rows(kstudy_store(store), data, policy_schemes(policies, data)[1] if policies is not None else None)
        gains = {n: g for n, g in matched_gains(defences).items() if g["gains"] or g["outside"]}
        if gains:
            L += ["Privacy (model) at matched accuracy, against the fixed-k frontier (k = 2, 6): " + "; ".join(
                f"{n} {g['mean']:+.3f}" if g["mean"] is not None else f"{n} outside its accuracy range"
                for n, g in gains.items()) + ".", ""]
        fig = grid_figure(data, defences, img / f"privacy_{data}.png")
        if fig is not None:
            L += [f"![{data} reconstructions]({os.path.relpath(fig, path.parent)})", ""]
    L += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".", "",
          f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", ""]
    text = "\n".join(L)
    return atomic_write(path, lambda tmp: tmp.write_text(text))
