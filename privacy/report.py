"""Figures and the privacy-accuracy frontier: the reconstruction grid of one evaluation, and the Pareto plot
over several defended models.

Plots use matplotlib's object API (no pyplot, no global backend switch) and are written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fr_models.trainer import atomic_write

__all__ = ["load_point", "pareto_dominated", "plot_pareto", "plot_reconstruction_grid", "save_figure", "write_section"]


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 80, colors: int = 64) -> Path:
    """Write a matplotlib figure as a palette PNG, atomically: grey faces with a few coloured labels need far fewer
    than the 16 million colours of matplotlib's RGBA output, and a palette keeps a large grid of faces under the
    repository's 1 MB file limit (a 10-defence grid is about 1 MB as RGBA, about a third of that as 64 colours).

    :param fig: the figure.
    :param path: the PNG to write.
    :param dpi: resolution.
    :param colors: palette size, 2 to 256.
    :raises ValueError: a palette size outside 2..256.
    """
    from PIL import Image

    if not 2 <= int(colors) <= 256:
        raise ValueError(f"colors must be in 2..256, got {colors}")

    def write(tmp: Path) -> None:
        fig.savefig(tmp, dpi=dpi)
        with Image.open(tmp) as im:
            rgb = im.convert("RGB")
        rgb.quantize(colors=int(colors)).save(tmp, format="PNG", optimize=True)

    return atomic_write(path, write)


def write_section(md_path: str | os.PathLike[str], section: str) -> Path:
    """Replace the ``## `` section of a markdown file that has ``section``'s heading (its first line) with
    ``section``, or insert it before the first section when absent; written atomically.

    :param md_path: the file (created with a ``# Measured figures`` title when absent).
    :param section: the new section, starting with its ``## `` heading line.
    :raises ValueError: a section that does not start with a ``## `` heading.
    """
    head = section.split("\n", 1)[0]
    if not head.startswith("## "):
        raise ValueError(f"a section starts with a '## ' heading, got {head!r}")
    path = Path(md_path)
    text = path.read_text() if path.is_file() else "# Measured figures\n\n"
    if head in text:
        start = text.index(head)
        nxt = text.find("\n## ", start + len(head))
        text = text[:start] + section + ("" if nxt < 0 else text[nxt:])
    else:
        first = text.find("\n## ")
        text = (text + "\n" + section) if first < 0 else text[: first + 1] + section + "\n" + text[first + 1:]
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def pareto_dominated(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which points are dominated when both coordinates are to be maximised (e.g. accuracy, privacy).

    A point is dominated iff another point is at least as good in both coordinates and strictly better in one.

    >>> pareto_dominated([(0.9, 0.1), (0.8, 0.5), (0.7, 0.4), (0.8, 0.5)])
    [False, False, True, False]
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    out = []
    for p in pts:
        ge = (pts >= p).all(1)
        gt = (pts > p).any(1)
        out.append(bool((ge & gt).any()))
    return out


def plot_reconstruction_grid(
    real: torch.Tensor,
    columns: dict[str, torch.Tensor],
    row_names: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    verdicts: dict[str, Sequence[str]] | None = None,
) -> Path:
    """A grid: per identity (row), a real private face, then each attack's reconstruction (columns), each face
    about 2 cm across (at the images' own resolution up to 128 pixels), with the judge's verdict under it.

    :param real: ``(R, C, H, W)`` one real face per row.
    :param columns: attack name -> ``(R, C, H, W)`` reconstructions (a row of NaNs leaves the cell empty).
    :param row_names: one label per row.
    :param path: the PNG to write.
    :param title: figure title.
    :param verdicts: attack name -> one label per row, written under the reconstruction (``"= name"``: the judge
        names the right identity, in green; anything else in red).
    """
    from matplotlib.figure import Figure

    names = ["real (private)", *columns]
    cols = [real, *columns.values()]
    rows = len(real)
    fig = Figure(figsize=(1.9 * len(names) + 1.2, 2.1 * rows + 0.8))
    axes = fig.subplots(rows, len(names), squeeze=False)
    for r in range(rows):
        for c, (name, imgs) in enumerate(zip(names, cols)):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = imgs[r].detach().float().cpu()
            if torch.isfinite(img).all():
                arr = img.permute(1, 2, 0).numpy()
                ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray", vmin=0, vmax=1)
            if r == 0:
                ax.set_title(name, fontsize=8)
            if c == 0:
                ax.set_ylabel(str(row_names[r])[:18], fontsize=7)
            label = (verdicts or {}).get(name, [""] * rows)[r] if c > 0 else ""
            if label:
                ax.set_xlabel(label[:22], fontsize=7, color="green" if label.startswith("=") else "firebrick")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=72)


def plot_pareto(
    labels: Sequence[str],
    accuracy: Sequence[float],
    privacy: Sequence[float],
    path: str | os.PathLike[str],
    xlabel: str = "identification top-1 (utility)",
    ylabel: str = "privacy score (1 - leakage of the strongest attack)",
) -> Path:
    """Scatter of defences by utility and privacy; the non-dominated ones joined as the frontier, dominated ones grey.

    :param labels: one name per defence.
    :param accuracy: its utility.
    :param privacy: its privacy score.
    :param path: the PNG to write.
    """
    from matplotlib.figure import Figure

    if not (len(labels) == len(accuracy) == len(privacy)) or not labels:
        raise ValueError(f"need one accuracy and one privacy per label, got {len(labels)}, {len(accuracy)}, {len(privacy)}")
    dom = pareto_dominated(list(zip(accuracy, privacy)))
    fig = Figure(figsize=(6.5, 4.8))
    ax = fig.subplots()
    front = sorted((a, p) for a, p, d in zip(accuracy, privacy, dom) if not d)
    ax.plot([a for a, _ in front], [p for _, p in front], "-", color="#4c72b0", zorder=1, label="frontier")
    for name, a, p, d in zip(labels, accuracy, privacy, dom):
        ax.scatter([a], [p], color="#bbbbbb" if d else "#dd8452", edgecolor="k", zorder=2)
        ax.annotate(f"{name}{' (dominated)' if d else ''}", (a, p), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))


def load_point(path: Path) -> dict[str, Any]:
    """Label, utility and privacy of one evaluation's ``privacy.json`` (:func:`privacy.evaluate.evaluate_privacy`),
    as a point of the frontier; clear errors for files that are not one."""
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not a readable privacy.json ({e})") from e
    if not isinstance(report, dict) or report.get("privacy_score") is None:
        raise ValueError(f"{str(path)!r} has no privacy_score: expected the privacy.json of evaluate_privacy.py")
    utility = report.get("utility") or {}
    if "top1" not in utility:
        raise ValueError(f"{str(path)!r} has no utility (identification top-1): evaluate a model whose folder holds "
                         "train_fr.py's metrics.json")
    k = f" k={report['k']}" if report.get("k") else ""
    label = f"{report.get('defence')}{k} ({report.get('input')})"
    return {"label": label, "path": str(path), "accuracy": float(utility["top1"]),
            "privacy": float(report["privacy_score"])}
