"""DP-SGD's noise sweep: the noise multiplier lowered until its models learn above the majority class.

At the noise that gives a meaningful guarantee DP-SGD can leave a face model at the majority-class rate (the
legacy grid's LFW models: top-1 0.188, the majority class's rate): it then "leaks nothing" because it learned
nothing, and a comparison with it says nothing. :func:`sweep_dpsgd` trains one model per noise multiplier, from the
largest down, on the page's (or grid's) private split and recipe, keeps each point (its epsilon, held-out top-1
with its bootstrap 95 % interval, both chance levels) as a JSON file in a :class:`~privacy.grid.CellStore` as soon
as it is trained, and stops at the first point that *learns*: its top-1 interval lies wholly above the
majority-class rate. :func:`compared_point` is the point compared with the other defences, the most accurate of the
learning points (the smallest noise the sweep reached), and :func:`compared_spec` its
:class:`~privacy.defences.DefenceSpec`. Only training is swept; the compared point is then attacked like every
other defence.

>>> points = [{"noise_multiplier": 1.0, "learns": False, "top1": 0.19},
...           {"noise_multiplier": 0.5, "learns": True, "top1": 0.41}]
>>> compared_point(points)["noise_multiplier"]
0.5
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from privacy.defences import DefenceSpec
from privacy.grid import GRID_DEFENCES, Cell, CellStore, GridConfig, settings_hash, train_cell_model

__all__ = ["DP_NOISE", "compared_point", "compared_spec", "sweep_dpsgd", "sweep_name"]

#: The noise multipliers swept, largest (most private) first.
DP_NOISE: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1)


def sweep_name(noise_multiplier: float) -> str:
    """The defence name of a sweep point (``dpsgd_z0.5``), its file ``<data>__dpsgd_z0.5__s<seed>.json``."""
    return f"dpsgd_z{noise_multiplier:g}"


def _learns(point: dict[str, Any]) -> bool:
    return point["top1_interval"][0] > point["chance"]["majority_class"]


def sweep_dpsgd(config: GridConfig, data: str, store: CellStore, noise: Sequence[float] = DP_NOISE,
                base: DefenceSpec | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Train DP-SGD models at each of ``noise`` (sorted largest first) until one learns above the majority class.

    :param config: how models are trained (its data settings, recipe, work folder, progress; its attack budget and
        judges play no part).
    :param data: the data set (a key of ``config.data_settings``).
    :param store: where each point is written as it finishes (a rerun reuses the points of the same settings).
    :param noise: the noise multipliers (> 0).
    :param base: the DP-SGD spec whose noise is varied (default: the grid's ``dpsgd``: clipping 1, delta 1e-5).
    :param seed: the training seed (the identity split is seed 0's, as in the grid).
    :return: the points trained or reused, largest noise first: ``noise_multiplier``, ``epsilon``, ``delta``,
        ``top1``, ``top1_interval``, ``top5``, ``chance`` (``uniform``, ``majority_class``), ``learns``,
        ``test_images``, ``train_seconds``.
    :raises ValueError: no noise, a noise <= 0, or a base spec that is not DP-SGD.
    """
    base = base if base is not None else GRID_DEFENCES["dpsgd"]
    if base.name != "dpsgd":
        raise ValueError(f"sweep_dpsgd varies a DP-SGD defence, got base defence {base.name!r}")
    if not noise or any(not z > 0 for z in noise):
        raise ValueError(f"noise multipliers must be > 0 (at least one), got {list(noise)}")
    points = []
    for z in sorted(set(noise), reverse=True):
        name, spec = sweep_name(z), dataclasses.replace(base, noise_multiplier=float(z))
        point_config = dataclasses.replace(config, defences=(name,), seeds=(seed,),
                                           defence_specs={**config.defence_specs, name: spec})
        cell = Cell(data, name, seed)
        settings = {k: v for k, v in point_config.settings(cell).items() if k not in ("attacks", "judges")}
        if store.finished(cell, settings):
            point = store.read(cell)
            print(f"dpsgd sweep {data} z={z:g}: reused (top-1 {point['top1']:.3f}, epsilon {point['epsilon']:.1f})")
        else:
            metrics, _ = train_cell_model(point_config, cell, spec)
            ident = metrics["identification"]
            point = {"noise_multiplier": float(z), "epsilon": metrics["dp"]["epsilon"], "delta": metrics["dp"]["delta"],
                     "top1": ident["top1"], "top1_interval": ident["top1_interval"], "top5": ident["top5"],
                     "chance": {k: metrics["chance"][k] for k in ("uniform", "majority_class")},
                     "test_images": metrics["test_images"], "train_seconds": metrics["train_seconds"],
                     "settings": settings, "settings_hash": settings_hash(settings),
                     "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            point["learns"] = _learns(point)
            store.write(cell, point)
            print(f"dpsgd sweep {data} z={z:g}: top-1 {point['top1']:.3f} (95 % {point['top1_interval'][0]:.3f}-"
                  f"{point['top1_interval'][1]:.3f}; majority class {point['chance']['majority_class']:.3f}), "
                  f"epsilon {point['epsilon']:.1f}, {point['train_seconds']:.0f} s", flush=True)
        points.append(point)
        if point["learns"]:
            break
    return points


def compared_point(points: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The sweep point compared with the other defences: the most accurate point that learns above the majority
    class (``None``: none does, and DP-SGD is reported as not learning at any swept noise)."""
    learning = [p for p in points if p["learns"]]
    return max(learning, key=lambda p: p["top1"]) if learning else None


def compared_spec(points: Sequence[dict[str, Any]], base: DefenceSpec | None = None) -> DefenceSpec | None:
    """:func:`compared_point`'s defence (``base`` with its noise), or ``None``."""
    best = compared_point(points)
    if best is None:
        return None
    return dataclasses.replace(base if base is not None else GRID_DEFENCES["dpsgd"],
                               noise_multiplier=best["noise_multiplier"])
