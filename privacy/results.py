"""The defence grid's report: tables, Pareto plots, reconstruction grids and a verdict, computed from the cells of a
:class:`~privacy.grid.CellStore` alone (never typed).

>>> policy_habit({"2": 0.05, "6": 0.95}, 5.8)
'it collapsed to one k: k = 6 for 95% of the faces (mean k 5.80)'
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fr_models.system import versions
from fr_models.trainer import atomic_write
from privacy.attacks._loop import MIN_UPDATES
from privacy.defences import DefenceSpec
from privacy.stats import bootstrap_interval, matched_privacy
from privacy.grid import (
    ATTACKS,
    DATASETS,
    FIXED,
    GRID_DEFENCES,
    HEADLINE,
    POLICIES,
    SHOWN,
    CellStore,
    DataSettings,
    decode_thumbnails,
)
from privacy.report import pareto_dominated, save_figure

__all__ = ["policy_habit", "summarise", "verdict", "write_report"]


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


#: The sanity checks of every grid run: (name, data set or None for every one, defence, attacks (the strongest
#: counts), threshold on the pretrained judge's top-1, what it shows).
SANITY_CHECKS: tuple[tuple[str, str | None, str, tuple[str, ...], float, str], ...] = (
    ("data-level attack on all channels, k = 1", None, "none", ("datalevel",), 0.90,
     "the input is an orthonormal transform of the face: the attack must recover nearly every face"),
    ("strongest white-box attack on the undefended pixel model", "lfw", "pixel",
     ("whitebox_vae", "whitebox_eigenface", "whitebox_pixels"), 0.50,
     "an attack too weak to break an undefended model cannot tell defences apart"),
)


def sanity_checks(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The :data:`SANITY_CHECKS` on the cells, per data set they apply to: the measured figure (mean over seeds of
    the strongest listed attack's top-1 by the pretrained judge) and whether it reaches the threshold
    (``passed`` is ``None`` where the cells hold no such defence or no pretrained judge's figures)."""
    table = summarise(cells)
    out = []
    for name, only, defence, attacks, threshold, why in SANITY_CHECKS:
        for data in [only] if only else list(table):
            cs = table.get(data, {}).get(defence, {}).get("cells", [])
            values = [max(c["attacks"][a]["judges"]["pretrained"]["top1"] for a in attacks if a in c["attacks"]
                          and "pretrained" in c["attacks"][a].get("judges", {})) for c in cs
                      if any("pretrained" in c["attacks"].get(a, {}).get("judges", {}) for a in attacks)]
            measured = float(np.mean(values)) if values else None
            out.append({"check": name, "data": data, "defence": defence, "threshold": threshold, "why": why,
                        "measured": measured, "seeds": len(values),
                        "passed": None if measured is None else measured >= threshold})
    return out


def matched_gains(defences: dict[str, dict[str, Any]], privacy: str = "privacy_model") -> dict[str, dict[str, Any]]:
    """Privacy at matched accuracy: per defence (other than fixed k) and seed, its privacy minus the privacy of
    the fixed-k frontier of the same seed at its accuracy (:func:`privacy.stats.matched_privacy`), so a defence
    that is "more private" only because it learned less gains nothing. Seeds whose accuracy lies outside the
    fixed-k frontier's range give no figure.

    :return: defence -> ``gains`` (per seed with a figure), ``mean``, ``interval`` (bootstrap 95 % over seeds;
        ``None`` with fewer than 2) and ``outside`` (seeds out of the frontier's range).
    """
    out: dict[str, dict[str, Any]] = {}
    for name, d in defences.items():
        if name in FIXED:
            continue
        gains, outside = [], 0
        for c in d["cells"]:
            seed = c["settings"]["seed"]
            fixed = [f for k in FIXED for f in defences.get(k, {}).get("cells", []) if f["settings"]["seed"] == seed]
            if not fixed:
                continue
            at = matched_privacy([f["utility"]["top1"] for f in fixed], [f[privacy] for f in fixed], c["utility"]["top1"])
            if np.isnan(at):
                outside += 1
            else:
                gains.append(c[privacy] - at)
        out[name] = {"gains": gains, "outside": outside, "mean": float(np.mean(gains)) if gains else None,
                     "interval": list(bootstrap_interval(gains)) if len(gains) > 1 else None}
    return out


def _gain_text(g: dict[str, Any]) -> str:
    if g["mean"] is None:
        return "–"
    iv = f" ({g['interval'][0]:+.3f} to {g['interval'][1]:+.3f})" if g["interval"] else ""
    return f"{g['mean']:+.3f}{iv}"


def check_row(c: dict[str, Any]) -> str:
    """A row of the report's sanity-check table."""
    measured = "not measured" if c["measured"] is None else f"{c['measured']:.3f} ({c['seeds']} seeds)"
    word = "not measured" if c["passed"] is None else ("passed" if c["passed"] else "**FAILED**")
    return f"| {c['check']} | {c['data']} | {c['defence']} | {measured} | >= {c['threshold']:.2f} | {word} |"


def defence_order(defences: dict[str, Any]) -> list[str]:
    known = list(GRID_DEFENCES)
    return sorted(defences, key=lambda d: known.index(d) if d in known else len(known))


def verdict(data: str, defences: dict[str, dict[str, Any]], collect: dict[str, Any] | None = None) -> list[str]:
    """Plain-language findings for one data set, computed from the means over seeds.

    :param collect: if given, filled with ``dominated`` (names) and ``policies`` (name -> outcome: ``beats``,
        ``ties``, ``less private`` or ``more accurate than every fixed k``) for the summary at the top."""
    collect = {} if collect is None else collect
    collect["policies"] = {}
    names = defence_order(defences)
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
    """Reconstructions of seed 0: per defence a row of the shown attacks' images (:data:`~privacy.grid.SHOWN`: the
    white-box attacks with the VAE and the eigenface prior, the per-mix and the clustering data-level attacks), each
    with its judge's verdict where the cell has one."""
    from matplotlib.figure import Figure

    rows = [(n, next((c for c in defences[n]["cells"] if c["settings"]["seed"] == min(defences[n]["seeds"])), None))
            for n in defence_order(defences)]
    rows = [(n, c) for n, c in rows if c and c.get("thumbnails")]
    if not rows:
        return None
    side = rows[0][1].get("thumbnail_size", 28)
    real = decode_thumbnails(rows[0][1]["real_thumbnails"], side)
    shown = [a for a in SHOWN if any(a in c["thumbnails"] for _, c in rows)]
    n, cell = len(real), 0.75 if side <= 28 else 1.3  # inches per face
    fig = Figure(figsize=(len(shown) * n * cell + 1.5, (len(rows) + 1) * (cell + 0.25) + 0.6))
    axes = fig.subplots(len(rows) + 1, len(shown) * n, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    titles = {HEADLINE: f"{HEADLINE} (white-box, VAE prior)", "whitebox_eigenface": "whitebox_eigenface (white-box, "
              "eigenface prior)", "datalevel": "datalevel (per mix)",
              "datalevel_cluster": "datalevel_cluster (training run)"}
    for block, attack in enumerate(shown):
        axes[0][block * n].set_title(titles.get(attack, attack), fontsize=7, loc="left")
        for j in range(n):
            axes[0][block * n + j].imshow(real[j], cmap="gray", vmin=0, vmax=255)
    axes[0][0].set_ylabel("real", fontsize=7)
    for r, (name, c) in enumerate(rows, start=1):
        axes[r][0].set_ylabel(name, fontsize=7)
        for block, attack in enumerate(shown):
            if attack not in c["thumbnails"]:
                continue
            verdicts = c.get("thumbnail_verdicts", {}).get(attack, [])
            for j, img in enumerate(decode_thumbnails(c["thumbnails"][attack], c.get("thumbnail_size", side))):
                ax = axes[r][block * n + j]
                ax.imshow(img, cmap="gray", vmin=0, vmax=255)
                if j < len(verdicts) and verdicts[j]:
                    ax.set_xlabel(verdicts[j][:14], fontsize=6,
                                  color="green" if verdicts[j].startswith("=") else "firebrick")
    fig.suptitle(f"{data}: reconstructions of the first {n} attacked private identities (seed 0)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def write_report(store: CellStore, report: str | Path, data_settings: Mapping[str, DataSettings] = DATASETS,
                 defence_specs: Mapping[str, DefenceSpec] = GRID_DEFENCES) -> Path:
    """``RESULTS.md`` at ``report`` from the cells in ``store`` alone (plus figures beside it, under ``img/``).

    :param store: the grid's cells.
    :param report: the Markdown file to write.
    :param data_settings: the grid's data sets (their order is the report's; their settings are listed).
    :param defence_specs: the grid's defences (listed with their settings).
    :raises FileNotFoundError: the store holds no cell.
    """
    report = Path(report)
    cells = store.require("run the grid first")
    table = summarise(cells)
    img = report.parent / "img"
    rel = os.path.relpath(img, report.parent)
    n_seeds = sorted({c["settings"]["seed"] for c in cells})
    total_s = sum(c.get("cell_seconds", 0.0) for c in cells)
    L = ["# Results: does adaptive mixing beat fixed mixing and the standard defences?", "",
         "Written by `python examples/reproduce.py` from the cells in "
         f"`{os.path.relpath(store.root, report.parent)}/` ({len(cells)} cells; seeds {n_seeds}; compute "
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
    order = list(data_settings)
    for data in sorted(table, key=lambda d: order.index(d) if d in order else len(order)):  # the main one (LFW) first
        section, brief_line = _dataset_section(data, table[data], img, rel)
        L += section
        brief.append(brief_line)
    checks = sanity_checks(cells)
    L[brief_at:brief_at] = ["## Sanity checks", "",
                            "Each asks whether the attacks are strong enough to see what the page compares (top-1 "
                            "by the pretrained judge, mean over seeds; `privacy.results.SANITY_CHECKS`).", "",
                            "| check | data set | defence | measured | needed | |", "|---|---|---|---|---|---|",
                            *[check_row(c) for c in checks], "",
                            "## Verdict in brief", "",
                            "Computed from the tables below (privacy against the model-inversion attacks; 'matched "
                            "accuracy' = a fixed k at least as accurate, within the policy's spread over seeds or "
                            "one point of top-1; 'beats' = more private by more than the seeds' spread). Why a policy "
                            "does what it does is in each data set's verdict (its k choices).", "", *brief, ""]
    L += _configuration(cells, table, data_settings, defence_specs)
    return atomic_write(report, lambda tmp: tmp.write_text("\n".join(L)))


def _configuration(cells: list[dict[str, Any]], table: dict[str, Any], data_settings: Mapping[str, DataSettings],
                   defence_specs: Mapping[str, DefenceSpec]) -> list[str]:
    """The report's configuration section: settings, compute, versions."""
    first = cells[0]["settings"]
    return ["## Configuration", "",
          "Per data set (`privacy.grid.DATASETS`): " + "; ".join(
              f"{d}: {json.dumps(dataclasses.asdict(data_settings[d]))}" for d in table if d in data_settings) + ".", "",
          f"Attacks (`privacy.evaluate.AttackBudget`): `{json.dumps(first['attacks'])}`. "
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
          "Defences (`privacy.defences.DefenceSpec`): " + "; ".join(
              f"{n}: `{json.dumps(s.as_dict())}`" for n, s in defence_specs.items()) +
          ". Identity split seed 0 for every cell (the seed varies the model's initialisation, batch order, mixing "
          "and the attacks); batch 64, AdamW lr 1e-3, mirroring, grid backbone, softmax head.", "",
          "Versions (of the machine that wrote this page): "
          + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
          "", f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", ""]


def _judge_line(cell: dict[str, Any]) -> str:
    """The cell's judges and their own top-1 on the real private faces (cells of before the pretrained judge
    name only the evaluator)."""
    if "judges" not in cell:
        return f"evaluator held-out top-1 {cell['evaluator_top1']:.3f}"
    return "judges (the first heads the table): " + ", ".join(
        f"{name} top-1 on the private faces {cell['judges'][name]['accuracy_on_private_faces']:.3f}"
        for name in cell["settings"]["judges"])


def _dataset_section(data: str, defences: dict[str, dict[str, Any]], img: Path, rel: str) -> tuple[list[str], str]:
    """One data set's part of the report (table, figures, verdict, every attack's metrics) and its brief verdict."""
    from privacy.report import plot_pareto

    L: list[str] = [f"## {data}", ""]
    any_cell = next(iter(defences.values()))["cells"][0]
    s = any_cell["settings"]
    lfw = any("lfw_verification_unseen_identities" in c["utility"] for d in defences.values() for c in d["cells"])
    L.append(f"{any_cell['private_identities']} private identities (chance top-1 "
             f"{any_cell['utility']['chance_top1']:.3f}), {s['train']['epochs']} epochs = "
             f"{any_cell['utility']['updates']} updates per model; attacks on {any_cell['attacked_identities']} "
             f"identities; {_judge_line(any_cell)}.")
    L.append("")
    attacks = [a for a in ATTACKS if any(a in c["attacks"] for d in defences.values() for c in d["cells"])]
    head = ["defence", "seeds", "top-1"] + (["LFW verif. (unseen)"] if lfw else []) + \
           [f"{a} top-1" for a in attacks] + ["privacy (model)", "privacy (all)", "notes"]
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in defence_order(defences):
        d = defences[name]
        cs = d["cells"]
        row = [name, str(len(cs)), _ms(d["top1"])]
        if lfw:
            row.append(_ms([c["utility"].get("lfw_verification_unseen_identities", np.nan) for c in cs]))
        row += [_ms([c["attacks"][a]["top1"] for c in cs if a in c["attacks"]]) for a in attacks]
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
    names = defence_order(defences)
    plot_pareto(names, [float(np.mean(defences[n]["top1"])) for n in names],
                [float(np.mean(defences[n]["privacy_model"])) for n in names], pareto,
                ylabel="privacy (model): 1 - leakage of the strongest model attack")
    L += [f"![{data}: privacy-accuracy frontier]({rel}/{pareto.name})", ""]
    grid = grid_figure(data, defences, img / f"results_reconstructions_{data}.png")
    if grid is not None:
        L += [f"![{data}: reconstructions]({rel}/{grid.name})", ""]
    found: dict[str, Any] = {}
    L += ["**Verdict**", "", *verdict(data, defences, found), ""]
    brief = (f"- **{data}**: Pareto-dominated: {', '.join(found['dominated']) or 'none'}. Adaptive policies against "
             "the best fixed k at matched accuracy: " + (", ".join(
                 f"{p} {o}" for p, o in found["policies"].items()) or "no policy run") + ".")
    model, every = matched_gains(defences), matched_gains(defences, "privacy_all")
    if model:
        L += ["**Privacy at matched accuracy.** Each defence's privacy minus that of the fixed-k frontier (the "
              "fixed k = 2..6 cells of the same seed, interpolated) at the defence's own top-1: > 0 is more private "
              "than fixed mixing at the same utility. Mean over seeds with its bootstrap 95 % interval; seeds whose "
              "top-1 lies outside the fixed-k range have no figure.", "",
              "| defence | gain in privacy (model) | gain in privacy (all) | seeds outside the range |",
              "|---|---|---|---|"]
        L += [f"| {n} | {_gain_text(model[n])} | {_gain_text(every[n])} | {model[n]['outside']} |"
              for n in defence_order(model)]
        L.append("")
    L += ["<details><summary>Every attack's metrics (means over seeds)</summary>", "",
          "| defence | attack | top-1 | top-5 | × chance | KNN own / other | PSNR | SSIM |",
          "|---|---|---|---|---|---|---|---|"]
    for name in names:
        for a in ATTACKS:
            ms = [c["attacks"][a] for c in defences[name]["cells"] if a in c["attacks"]]
            if ms:
                m = {k: float(np.mean([x[k] for x in ms])) for k in ms[0] if not isinstance(ms[0][k], dict)}
                L.append(f"| {name} | {a} | {m['top1']:.3f} | {m['top5']:.3f} | {m['top1_over_chance']:.1f} | "
                         f"{m['knn_dist']:.3f} / {m['knn_dist_other']:.3f} | {m['psnr']:.2f} | {m['ssim']:.3f} |")
    L += ["", "</details>", ""]
    return L, brief
