"""The pretrained judge's own accuracy on each data set's real private faces, and its cost per face.

    MIXUP_ENV_DATA=../shared/data python3 benchmarks/judge.py                 # LFW, AT&T, Extended Yale B
    MIXUP_ENV_DATA=../shared/data python3 benchmarks/judge.py --datasets att_faces --sizes 64 0
    python3 benchmarks/judge.py --report-only                                  # rewrite docs/judge.md

For each data set: the private identities of the defence grid's identity split (seed 0,
:data:`privacy.grid.DATASETS`), resized to the size the attacks reconstruct at (``--sizes``; 0 = native), are
enrolled in dlib's face recognizer (:class:`privacy.attacks.pretrained.PretrainedJudge`) and each face is
identified against the centroids of its identity's *other* faces and every other identity's faces (leave one
out): the ceiling of every attack figure the judge reports. Beside it the uniform and majority-class chance
levels, and the seconds per face. Each (data set, size) is a JSON file under ``--cells`` (default
``docs/results/judge``), written as it finishes; a rerun skips those already there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fr_models.data import images_to_tensor, load_faces, split_identities  # noqa: E402
from fr_models.system import versions  # noqa: E402
from fr_models.trainer import atomic_write  # noqa: E402
from privacy.attacks.pretrained import PretrainedJudge, leave_one_out_hits  # noqa: E402
from privacy.grid import DATASETS  # noqa: E402
from privacy.stats import bootstrap_interval, chance_levels  # noqa: E402


def measure(data: str, size: int) -> dict:
    """The judge on ``data``'s private faces at ``size`` (0: native)."""
    faces = load_faces(data)
    private_idx, _ = split_identities(faces.labels, DATASETS[data].public_fraction, 0)
    priv = faces.subset(private_idx)
    x = images_to_tensor(priv.images, size or None)
    y = torch.from_numpy(priv.labels).long()
    t0 = time.perf_counter()
    judge = PretrainedJudge.enrol(x, y, list(priv.names))
    seconds = time.perf_counter() - t0
    hits = leave_one_out_hits(judge.gallery_features, y, judge.num_classes)
    lo, hi = bootstrap_interval(hits)
    return {"data": data, "size": list(x.shape[-2:]), "faces": len(y), "identities": judge.num_classes,
            "top1": float(hits.mean()), "top1_interval": [lo, hi], **chance_levels(y.numpy(), judge.num_classes),
            "seconds_per_face": seconds / len(y), "versions": versions()}


def report(cells: Path, out: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(cells.glob("*.json"))]
    lines = ["# The pretrained judge on the real private faces", "",
             "Written by `MIXUP_ENV_DATA=../shared/data python3 benchmarks/judge.py` from the cells in "
             f"`{cells.relative_to(ROOT) if cells.is_relative_to(ROOT) else cells}/`. dlib's ResNet face recognizer "
             "(`privacy.attacks.pretrained`, the `judge` extra; never trained on these faces) identifies each private "
             "face of the grid's identity split (seed 0) against the identity centroids of the others (leave one "
             "out). This is the ceiling of every attack figure it reports: a perfect reconstruction scores this.", "",
             "| data set | size | private faces | identities | judge top-1 (95 % interval) | uniform chance | "
             "majority chance | s per face |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["top1_interval"]
        lines.append(f"| {r['data']} | {r['size'][0]}x{r['size'][1]} | {r['faces']} | {r['identities']} | "
                     f"{r['top1']:.3f} ({lo:.3f}-{hi:.3f}) | {r['uniform']:.3f} | {r['majority']:.3f} | "
                     f"{r['seconds_per_face']:.3f} |")
    if rows:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in rows[-1]["versions"].items()) + "."]
    text = "\n".join(lines) + "\n"
    atomic_write(out, lambda tmp: tmp.write_text(text))
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["att_faces", "extended_yaleb", "lfw"],
                   choices=[d for d in DATASETS if d != "synthetic"])
    p.add_argument("--sizes", type=int, nargs="+", default=[64], help="image sides (0: native)")
    p.add_argument("--cells", type=Path, default=ROOT / "docs" / "results" / "judge")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "judge.md")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    args.cells.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for data in args.datasets:
            for size in args.sizes:
                path = args.cells / f"{data}_{size or 'native'}.json"
                if path.is_file():
                    continue
                r = measure(data, size)
                atomic_write(path, lambda tmp: tmp.write_text(json.dumps(r, indent=1)))
                print(f"{data} at {r['size']}: judge top-1 {r['top1']:.3f} on {r['faces']} faces of {r['identities']} "
                      f"identities (majority {r['majority']:.3f}), {r['seconds_per_face']:.3f} s a face", flush=True)
    print(report(args.cells, args.out))


if __name__ == "__main__":
    main()
