"""The data-level attacks against the mixing scheme alone: fixed k = 2..6, k drawn uniformly from 2..6, and the
k distributions the grid's policies chose.

What a curious training server sees depends only on the scheme (the channel mask, how k is drawn, the Dirichlet
weights), not on the FR network's weights, so one masked model's transform serves every scheme: the page's
``mask`` model (:func:`privacy.grid.train_cell_model`, reused when it exists). Each scheme is attacked by the
per-mix attack (``datalevel``) and the whole-run clustering attack (``datalevel_cluster``, Carlini et al.) through
:func:`privacy.evaluate.evaluate_privacy` with the scheme as the budget's ``mix_k`` / ``mix_weights``, judged like
every page cell, and kept as one JSON file per (data set, scheme) in a :class:`~privacy.grid.CellStore`
(``<page cells>/kstudy``): a rerun skips the schemes already computed under the same settings.

A policy's k distribution is simulated with k drawn independently of the face; a policy that gives particular
faces particular k is simulated by its marginal only. A policy that chose one k throughout (a share of at least
:data:`ONE_K` for one value) is that fixed scheme and is not attacked again (:func:`policy_schemes`).

>>> Scheme("k2", (2,)).label
'k = 2'
>>> Scheme("ppo_s0", (2, 3), (0.25, 0.75), "grid ppo seed 0").label
'k in {2: 0.25, 3: 0.75} (grid ppo seed 0)'
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from privacy.evaluate import evaluate_privacy
from privacy.grid import GRID_DEFENCES, Cell, CellStore, GridConfig, judge_paths, settings_hash, train_cell_model

__all__ = ["KSTUDY_ATTACKS", "ONE_K", "Scheme", "default_schemes", "kstudy_rows", "policy_schemes", "run_kstudy"]

#: The attacks that see the training inputs.
KSTUDY_ATTACKS: tuple[str, ...] = ("datalevel", "datalevel_cluster")

#: A policy whose largest share of one k is at least this chose that k throughout.
ONE_K = 0.99

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Scheme:
    """One mixing scheme: k drawn from ``k_values`` with probabilities ``weights`` (``None``: uniformly).

    :param name: a file-name-safe name (letters, digits, ``_ . -``; no double underscore).
    :param k_values: the k values (>= 1).
    :param weights: how often each is drawn (>= 0, positive sum), or ``None``.
    :param source: where the scheme comes from (a policy's cell), for the page.
    """

    name: str
    k_values: tuple[int, ...]
    weights: tuple[float, ...] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or "__" in self.name:
            raise ValueError(f"scheme name {self.name!r}: accepted letters, digits, '_', '.', '-' (no '__')")
        object.__setattr__(self, "k_values", tuple(int(k) for k in self.k_values))
        if not self.k_values or min(self.k_values) < 1:
            raise ValueError(f"scheme {self.name}: k values must be >= 1 (at least one), got {list(self.k_values)}")
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
            if len(self.weights) != len(self.k_values) or min(self.weights) < 0 or not sum(self.weights) > 0:
                raise ValueError(f"scheme {self.name}: one weight >= 0 per k with a positive sum, got weights "
                                 f"{list(self.weights)} for k {list(self.k_values)}")

    @property
    def label(self) -> str:
        if len(self.k_values) == 1:
            text = f"k = {self.k_values[0]}"
        elif self.weights is None:
            text = f"k uniform in {{{', '.join(map(str, self.k_values))}}}"
        else:
            total = sum(self.weights)
            text = "k in {" + ", ".join(f"{k}: {w / total:.2f}" for k, w in zip(self.k_values, self.weights)) + "}"
        return f"{text} ({self.source})" if self.source else text


def policy_schemes(results: str | Path, data: str, algos: Sequence[str] = ("reinforce", "ppo", "sac"),
                   seeds: Sequence[int] = (0, 1, 2)) -> tuple[list[Scheme], dict[str, int]]:
    """The k distributions of the grid's policy cells ``<results>/<data>__<algo>__s<seed>.json``.

    :return: ``(schemes, one_k)``: a scheme per policy that mixed more than one k, and per policy that chose one k
        throughout (:data:`ONE_K`) that k (``{"reinforce_s0": 6}``). Missing cells are left out.
    """
    schemes, one_k = [], {}
    for algo in algos:
        for seed in seeds:
            path = Path(results) / f"{data}__{algo}__s{seed}.json"
            if not path.is_file():
                continue
            dist = {int(k): float(p) for k, p in json.loads(path.read_text()).get("k_distribution", {}).items()
                    if float(p) > 0}
            if not dist:
                continue
            name = f"{algo}_s{seed}"
            top = max(dist, key=dist.__getitem__)
            if dist[top] >= ONE_K * sum(dist.values()):
                one_k[name] = top
            else:
                ks = tuple(sorted(dist))
                schemes.append(Scheme(name, ks, tuple(dist[k] for k in ks), f"grid {algo} seed {seed}"))
    return schemes, one_k


def default_schemes(k_max: int = 6) -> list[Scheme]:
    """Fixed k = 2..``k_max`` and k uniform in 2..``k_max`` (the ``random`` defence). k = 1, the mask alone, is not
    among them: the page's ``mask`` cell is that model attacked with that scheme already."""
    return [*(Scheme(f"k{k}", (k,)) for k in range(2, k_max + 1)),
            Scheme("uniform", tuple(range(2, k_max + 1)))]


def run_kstudy(config: GridConfig, data: str, store: CellStore, schemes: Sequence[Scheme],
               seed: int = 0) -> list[dict[str, Any]]:
    """Attack each scheme on ``data`` with :data:`KSTUDY_ATTACKS`; each scheme's record is written as it finishes.

    :param config: the page's (or grid's) configuration: its ``mask`` model, attack budget, judges and work folder.
    :param data: the data set.
    :param store: where the records go (one per scheme, ``<data>__<scheme>__s<seed>.json``).
    :param schemes: the schemes (distinct names).
    :param seed: the mask model's training seed and the attacks' seed.
    :return: the records, in the order of ``schemes``.
    :raises ValueError: two schemes with one name.
    """
    names = [s.name for s in schemes]
    if len(set(names)) != len(names):
        raise ValueError(f"scheme names must be distinct, got {names}")
    mask_spec = config.defence_specs.get("mask", GRID_DEFENCES["mask"])
    model_settings = dataclasses.replace(config, defences=("mask",), seeds=(seed,),
                                         defence_specs={**config.defence_specs, "mask": mask_spec})
    base = {k: v for k, v in model_settings.settings(Cell(data, "mask", seed)).items() if k != "attacks"}
    records, model = [], None
    for scheme in schemes:
        cell = Cell(data, scheme.name, seed)
        budget = dataclasses.replace(config.attack, mix_k=scheme.k_values, mix_weights=scheme.weights)
        settings = {**base, "kstudy_attacks": list(KSTUDY_ATTACKS), "budget": budget.as_dict()}
        if store.finished(cell, settings):
            records.append(store.read(cell))
            print(f"kstudy {data} {scheme.name}: reused", flush=True)
            continue
        if model is None:
            model = train_cell_model(model_settings, Cell(data, "mask", seed), mask_spec)[1] / "fr_model.pt"
        ev_path, prior_path, gallery = judge_paths(config, data)
        t0 = time.perf_counter()
        report = evaluate_privacy(model, data, KSTUDY_ATTACKS, budget, judges=config.judges, evaluator=ev_path,
                                  gallery=gallery, prior=prior_path,
                                  out=config.work / data / "kstudy" / scheme.name, seed=seed,
                                  progress=config.progress)
        keep = ("top1", "top5", "knn_dist", "knn_dist_other", "psnr", "ssim", "seconds", "dominant_weight",
                "cluster_purity", "clusters", "encodings_per_cluster", "made", "judged", "k_values",
                "k_weights")
        record = {
            "data": data, "scheme": scheme.name, "k_values": list(scheme.k_values),
            "weights": None if scheme.weights is None else list(scheme.weights), "source": scheme.source,
            "label": scheme.label,
            "attacks": {a: {**{k: m[k] for k in keep if k in m},
                            "intervals": {k: list(v) for k, v in m["intervals"].items()},
                            "judges": {j: {k: jm[k] for k in ("top1", "top5")} for j, jm in m["judges"].items()}}
                        for a, m in report["attacks"].items() if "top1" in m},
            "chance": report["chance"], "judges": report["judges"],
            "attacked_identities": report["attacked_identities"], "private_identities": report["private_identities"],
            "seconds": round(time.perf_counter() - t0, 1), "settings": settings,
            "settings_hash": settings_hash(settings),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        store.write(cell, record)
        figures = ", ".join(f"{a} {m['top1']:.3f}" for a, m in record["attacks"].items())
        print(f"kstudy {data} {scheme.name}: top-1 {figures} ({next(iter(report['judges']))} judge), "
              f"{record['seconds']:.0f} s", flush=True)
        records.append(record)
    return records


def kstudy_rows(store: CellStore, data: str, one_k: dict[str, int] | None = None) -> list[str]:
    """The page's table of the schemes attacked on ``data`` (none: no rows); ``one_k`` (from
    :func:`policy_schemes`): the policies that chose one k, named under the table."""
    records = [r for r in store.load() if r.get("data") == data and "scheme" in r]
    if not records:
        return []
    order = {s.name: i for i, s in enumerate(default_schemes())}
    records.sort(key=lambda r: (order.get(r["scheme"], len(order)), r["scheme"]))
    rows = ["Data-level attacks against the mixing scheme alone (the `mask` model's transform; `privacy.kstudy`): "
            "top-1 by the pretrained judge (95 % interval) / by the evaluator; k = 1 is the `mask` cell's.", "",
            "| scheme | datalevel (one mix) | evaluator | datalevel_cluster (whole run) | evaluator | "
            "cluster purity |", "|---|---|---|---|---|---|"]

    def cell(m: dict[str, Any] | None) -> str:
        if m is None:
            return "– | –"
        lo, hi = m["intervals"]["top1"]
        ev = m.get("judges", {}).get("evaluator", {}).get("top1")
        return f"{m['top1']:.3f} ({lo:.3f}-{hi:.3f}) | {'–' if ev is None else f'{ev:.3f}'}"

    for r in records:
        a = r["attacks"]
        purity = a.get("datalevel_cluster", {}).get("cluster_purity")
        rows.append(f"| {r['label']} | {cell(a.get('datalevel'))} | {cell(a.get('datalevel_cluster'))} | "
                    f"{'–' if purity is None else f'{purity:.2f}'} |")
    if one_k:
        rows += ["", "The grid's policies that chose one k throughout are that fixed row: " + ", ".join(
            f"{name} k = {k}" for name, k in sorted(one_k.items())) + "."]
    return [*rows, ""]
