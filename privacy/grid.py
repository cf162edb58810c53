"""The defence grid: every (data set, defence, seed) cell trained, evaluated and attacked, kept in a resumable store.

A :class:`Cell` is one (data set, defence, seed): an FR model trained on the private identities
(:func:`privacy.defences.train_fr_model`), its identification accuracy (and LFW verification), and every attack of
:func:`privacy.evaluate.evaluate_privacy` on it. :func:`run_grid` computes the cells a :class:`GridConfig` names
and writes each, as soon as it is done, into a :class:`CellStore`: one small JSON file per cell (with thumbnails
of its reconstructions), written atomically, so an interrupted run picks up where it stopped and the report
(:func:`privacy.results.write_report`) is regenerated from the cells without recomputing anything. A cell whose
settings changed (its settings hash) is recomputed. Models, agents, the evaluator and the prior live in
``GridConfig.work`` (not in the repository). ``examples/reproduce.py`` is the command line.

>>> Cell("lfw", "fixed2", 0).filename
'lfw__fixed2__s0.json'
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fr_models.data import load_faces, split_identities
from fr_models.recipes import get_recipe
from fr_models.trainer import atomic_write
from privacy.attacks import privacy_score
from privacy.attacks._loop import MIN_UPDATES
from privacy.defences import DefenceSpec, PolicySpec, train_fr_model
from privacy.evaluate import JUDGES, AttackBudget, evaluate_privacy

__all__ = ["ATTACKS", "DATASETS", "FIXED", "GRID_ATTACKS", "GRID_DEFENCES", "HEADLINE", "MODEL_ATTACKS", "POLICIES",
           "SHOWN", "QUICK_AGENT", "QUICK_ATTACKS", "AgentBudget", "Cell", "CellStore", "DataSettings", "GridConfig",
           "decode_thumbnails", "run_cell", "run_grid", "settings_hash", "thumbnails", "train_cell_model"]


@dataclass(frozen=True)
class DataSettings:
    """How a data set is trained in the grid: the image size, the attacker's share of identities, the epochs (the
    same for every defence)."""

    image_size: int | None
    public_fraction: float
    epochs: int


DATASETS: dict[str, DataSettings] = {
    "lfw": DataSettings(64, 0.367, 20),
    "att_faces": DataSettings(64, 0.3, 100),
    "extended_yaleb": DataSettings(64, 0.3, 20),
    "synthetic": DataSettings(None, 0.3, 2),  # for the tests only
}
_NO_PATH = Path()  # a policy's agent is trained per cell, its path filled in then
#: the env id each policy acts on
POLICY_ENV_IDS: dict[str, str] = {"reinforce": "mixup_env/FrequencyMixupPerSample-v0",
                                  "ppo": "mixup_env/FrequencyMixupPerSample-v0",
                                  "sac": "mixup_env/FrequencyMixupPerSampleContinuous-v0"}
POLICIES = tuple(POLICY_ENV_IDS)
#: the grid's defences by name (every one trains the same backbone on the same private split as long)
GRID_DEFENCES: dict[str, DefenceSpec] = {
    "pixel": DefenceSpec("none"),  # the undefended model on pixels (the white-box sanity check's target)
    "none": DefenceSpec("dct"),
    "mask": DefenceSpec("mask"),
    **{f"fixed{k}": DefenceSpec("fixed", k=k) for k in range(2, 7)},
    "random": DefenceSpec("random"),
    **{algo: DefenceSpec("policy", policy=PolicySpec(_NO_PATH, algo, env)) for algo, env in POLICY_ENV_IDS.items()},
    "dpsgd": DefenceSpec("dpsgd", noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5),
    "nls": DefenceSpec("nls", smoothing=-0.05),
}
FIXED = tuple(f"fixed{k}" for k in range(2, 7))
MODEL_ATTACKS = ("whitebox_vae", "whitebox_eigenface", "whitebox_pixels", "blackbox_scores", "blackbox_embeddings")
ATTACKS = (*MODEL_ATTACKS, "datalevel", "datalevel_cluster")
HEADLINE = "whitebox_vae"
#: the grid's attacks; the evaluator and the prior are trained once per data set (by its first cell) and judge
#: every cell: the cells' small min_updates keeps the per-cell attack networks fast, but would leave the judges of
#: AT&T's few faces half trained
GRID_ATTACKS = AttackBudget(identities=20, steps=100, restarts=2, views=2, decoder_epochs=2, unmix_epochs=2,
                            min_updates=60, evaluator_epochs=20, prior_epochs=30, judge_min_updates=MIN_UPDATES,
                            grid_identities=4)
QUICK_ATTACKS = AttackBudget(identities=10, steps=30, restarts=1, views=2, decoder_epochs=2, unmix_epochs=2,
                             min_updates=60, evaluator_epochs=5, prior_epochs=5, grid_identities=4)
THUMB = 64  # side of the reconstruction thumbnails kept in the cells (28 until the pretrained judge: too small)
#: the attacks whose reconstructions the report shows: both white-box priors (on AT&T and LFW the eigenface one is
#: the stronger by the pretrained judge, the VAE prior's own ceiling being low) and both data-level attacks
SHOWN = (HEADLINE, "whitebox_eigenface", "datalevel", "datalevel_cluster")


@dataclass(frozen=True)
class AgentBudget:
    """A policy's training on the env (steps = FR updates of the agent's own training runs), per data set and seed."""

    timesteps: int = 1200
    episode_steps: int = 300


QUICK_AGENT = AgentBudget(100, 50)


@dataclass(frozen=True)
class Cell:
    """One (data set, defence, seed) of the grid."""

    data: str
    defence: str
    seed: int

    @property
    def filename(self) -> str:
        return f"{self.data}__{self.defence}__s{self.seed}.json"


@dataclass(frozen=True)
class GridConfig:
    """Which cells, and how each is computed.

    :param datasets: data set names (keys of ``data_settings``).
    :param defences: defence names (keys of ``defence_specs``).
    :param seeds: training seeds (the identity split is seed 0's for every cell).
    :param attack: the attack budget of every cell.
    :param agent: the policies' training budget.
    :param epochs: override every data set's training epochs.
    :param work: where models, agents, the evaluator and the prior are kept.
    :param recipe: the FR recipe of every cell (``"legacy"``: what the committed grid was computed with).
    :param data_settings: per data set name, its :class:`DataSettings`.
    :param defence_specs: per defence name, its :class:`~privacy.defences.DefenceSpec`.
    :param progress: show progress bars.
    :param judges: who judges the attacks (:data:`privacy.evaluate.JUDGES`; the first heads the figures).
    :param recalibrate_norms: re-estimate the models' batch-norm statistics on clean faces after training (what
        the ``real`` recipe's figures assume; ``False`` for ``legacy``, as the committed grid was computed).
    """

    datasets: tuple[str, ...]
    defences: tuple[str, ...] = tuple(GRID_DEFENCES)
    seeds: tuple[int, ...] = (0, 1, 2)
    attack: AttackBudget = GRID_ATTACKS
    agent: AgentBudget = AgentBudget()
    epochs: int | None = None
    work: Path = Path("runs/reproduce")
    recipe: str = "legacy"
    data_settings: Mapping[str, DataSettings] = field(default_factory=lambda: dict(DATASETS))
    defence_specs: Mapping[str, DefenceSpec] = field(default_factory=lambda: dict(GRID_DEFENCES))
    progress: bool = True
    judges: tuple[str, ...] = JUDGES
    recalibrate_norms: bool = False

    def __post_init__(self) -> None:
        for name in ("datasets", "defences", "seeds", "judges"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "work", Path(self.work))
        for what, given, known in (("data set", self.datasets, self.data_settings),
                                   ("defence", self.defences, self.defence_specs)):
            unknown = [g for g in given if g not in known]
            if unknown:
                raise ValueError(f"unknown {what}(s) {unknown}; accepted: {', '.join(known)}")
        if not self.judges or any(j not in JUDGES for j in self.judges):
            raise ValueError(f"judges={list(self.judges)}: accepted one or more of {', '.join(JUDGES)}")
        if not (self.datasets and self.defences and self.seeds):
            raise ValueError("a grid needs at least one data set, defence and seed")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        get_recipe(self.recipe)  # a clear error for an unknown recipe

    def cells(self) -> list[Cell]:
        """Every cell, in data set, seed, defence order."""
        return [Cell(d, f, s) for d in self.datasets for s in self.seeds for f in self.defences]

    def data(self, name: str) -> DataSettings:
        s = self.data_settings[name]
        return s if self.epochs is None else dataclasses.replace(s, epochs=self.epochs)

    def settings(self, cell: Cell) -> dict[str, Any]:
        """Everything that decides a cell's result; a cell computed under other settings is recomputed."""
        s = {"data": cell.data, "defence": cell.defence, "seed": cell.seed,
             "train": dataclasses.asdict(self.data(cell.data)), "recipe": self.recipe,
             "defence_spec": self.defence_specs[cell.defence].as_dict(), "attacks": self.attack.as_dict(),
             "judges": list(self.judges), "recalibrate_norms": self.recalibrate_norms, "identity_split_seed": 0}
        if cell.defence in POLICIES:
            s["agent"] = dataclasses.asdict(self.agent)
        return s


def settings_hash(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class CellStore:
    """The cells of a grid as JSON files in one folder: the single source of truth of results.

    :param root: the folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, cell: Cell) -> Path:
        return self.root / cell.filename

    def finished(self, cell: Cell, settings: Mapping[str, Any]) -> bool:
        """Whether the cell's file holds a result computed under ``settings`` (an unreadable file: unfinished)."""
        try:
            return json.loads(self.path(cell).read_text()).get("settings_hash") == settings_hash(settings)
        except (OSError, json.JSONDecodeError, AttributeError):
            return False

    def write(self, cell: Cell, record: Mapping[str, Any]) -> Path:
        """Write a cell's record atomically (never half a file)."""
        text = json.dumps(record, indent=1, sort_keys=True) + "\n"
        return atomic_write(self.path(cell), lambda tmp: tmp.write_text(text))

    def read(self, cell: Cell) -> dict[str, Any]:
        """The cell's record (:class:`FileNotFoundError` if it was never written)."""
        return json.loads(self.path(cell).read_text())

    def require(self, hint: str) -> list[dict[str, Any]]:
        """:meth:`load`, refusing an empty store (:class:`FileNotFoundError` ending in ``hint``: what to run)."""
        cells = self.load()
        if not cells:
            raise FileNotFoundError(f"no finished cells in {str(self.root)!r}: {hint}")
        return cells

    def load(self) -> list[dict[str, Any]]:
        """Every readable cell (an unreadable one is named on stderr and skipped)."""
        out = []
        for path in sorted(self.root.glob("*__*__s*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError) as e:
                print(f"skipping unreadable cell {path}: {e}", file=sys.stderr)
        return out


def thumbnails(images: np.ndarray, count: int) -> str:
    """The first ``count`` faces ``(R, C, H, W)`` uint8 as base64 of ``THUMB x THUMB`` uint8 grey images."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images[:count]).float().mean(1, keepdim=True)
    small = F.interpolate(x, size=(THUMB, THUMB), mode="area").round().clamp(0, 255).to(torch.uint8)
    return base64.b64encode(small.numpy().tobytes()).decode()


def decode_thumbnails(text: str, side: int = THUMB) -> np.ndarray:
    """``(n, side, side)`` uint8 images from :func:`thumbnails`."""
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(-1, side, side)


def train_agent(config: GridConfig, cell: Cell, path: Path) -> float:
    """Train the cell's mixing policy on the env over the private faces (the defender's own data); returns seconds."""
    import gymnasium as gym

    from agents import Reinforce, make_agent, make_vec_env, save_agent

    s = config.data(cell.data)
    faces = load_faces(cell.data)
    private_idx, _ = split_identities(faces.labels, s.public_fraction, 0)
    spec = config.defence_specs[cell.defence].policy
    assert spec is not None
    kwargs = dict(data=faces.subset(private_idx), image_size=s.image_size, episode_steps=config.agent.episode_steps,
                  eval_every=config.agent.episode_steps, hflip=True, split_seed=cell.seed, recipe=config.recipe,
                  storage="float32", recalibrate_norms=config.recalibrate_norms)
    t0 = time.perf_counter()
    if spec.algo == "reinforce":
        agent = Reinforce(gym.make(spec.env_id, **kwargs), seed=cell.seed)
        agent.learn(config.agent.timesteps, seed=cell.seed, progress_bar=config.progress)
        agent.save(path)
    else:
        venv = make_vec_env(spec.env_id, 1, cell.seed, kwargs)
        overrides: dict[str, Any] = ({"learning_starts": min(200, config.agent.timesteps // 4)}
                                     if spec.algo == "sac" else {})
        model = make_agent(spec.algo, venv, seed=cell.seed, **overrides)
        model.learn(total_timesteps=config.agent.timesteps, progress_bar=config.progress)
        save_agent(model, path)
        venv.close()
    return time.perf_counter() - t0


def judge_paths(config: GridConfig, data: str) -> tuple[Path, Path, Path]:
    """Where the data set's evaluator, VAE prior and pretrained judge's gallery live (shared by its cells)."""
    work = config.work / data
    return (work / f"evaluator_e{config.attack.evaluator_epochs}.pt",
            work / f"vae_prior_e{config.attack.prior_epochs}.pt", work / "judge_gallery.pt")


def train_cell_model(config: GridConfig, cell: Cell, spec: DefenceSpec) -> tuple[dict[str, Any], Path]:
    """Train the cell's FR model under ``spec`` on the private identities of the seed-0 split, in
    ``<work>/<data>/<defence>_s<seed>``; returns its metrics (:func:`~privacy.defences.train_fr_model`) and folder.
    A model that folder already holds from the same settings (``train_key.json``, written after the model) is
    reused: a cell interrupted during its attacks does not train again."""
    s = config.data(cell.data)
    out = config.work / cell.data / f"{cell.defence}_s{cell.seed}"
    # the grid keeps the models it was computed with (fr_models.recipes "legacy") until it is rerun on new ones
    recipe = get_recipe(config.recipe).replace(epochs=s.epochs, hflip=True, image_size=s.image_size)
    key = settings_hash({"data": cell.data, "seed": cell.seed, "train": dataclasses.asdict(s),
                         "recipe": recipe.as_dict(), "defence_spec": spec.as_dict(),
                         "policy_path": str(spec.policy.path) if spec.policy is not None else None,
                         "recalibrate_norms": config.recalibrate_norms, "identity_split_seed": 0})
    key_file = out / "train_key.json"
    try:  # a model trained under the same settings (an interrupted cell's): reused, not retrained
        done = json.loads(key_file.read_text())
        if done["key"] == key and (out / "fr_model.pt").is_file():
            print(f"{cell.data} {cell.defence} seed {cell.seed}: model reused from {out}", flush=True)
            return {**json.loads((out / "metrics.json").read_text()), "train_seconds": done["seconds"]}, out
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        pass
    key_file.unlink(missing_ok=True)
    t0 = time.perf_counter()
    metrics = train_fr_model(load_faces(cell.data), spec, recipe, out, seed=cell.seed, split_seed=0,
                             public_fraction=s.public_fraction, recalibrate_norms=config.recalibrate_norms,
                             progress=config.progress)
    metrics["train_seconds"] = round(time.perf_counter() - t0, 1)
    # last: the key marks a finished model (and keeps how long it took to train)
    atomic_write(key_file, lambda tmp: tmp.write_text(json.dumps({"key": key, "seconds": metrics["train_seconds"]})))
    return metrics, out


def run_cell(config: GridConfig, cell: Cell) -> dict[str, Any]:
    """Train, evaluate and attack one cell; returns its record (written by the caller)."""
    record: dict[str, Any] = {}
    spec = config.defence_specs[cell.defence]
    if spec.policy is not None and spec.policy.mode == "frozen":  # a co-trained policy learns in the FR run itself
        suffix = "pt" if spec.policy.algo == "reinforce" else "zip"
        agent_path = config.work / cell.data / "agents" / f"{cell.defence}_s{cell.seed}.{suffix}"
        record["agent_seconds"] = round(train_agent(config, cell, agent_path), 1)
        spec = dataclasses.replace(spec, policy=dataclasses.replace(spec.policy, path=agent_path))
    metrics, out = train_cell_model(config, cell, spec)
    record["train_seconds"] = metrics["train_seconds"]  # the model's own training, also when it was reused
    ev_path, prior_path, gallery = judge_paths(config, cell.data)
    t0 = time.perf_counter()
    report = evaluate_privacy(out / "fr_model.pt", cell.data, ATTACKS, config.attack, judges=config.judges,
                              evaluator=ev_path, gallery=gallery, prior=prior_path, out=out / "privacy",
                              seed=cell.seed, progress=config.progress)
    record["attack_seconds"] = round(time.perf_counter() - t0, 1)
    record.update(_cell_figures(metrics, report, out / "privacy" / "reconstructions.npz"))
    return record


def _cell_figures(metrics: dict[str, Any], report: dict[str, Any], shown_path: Path) -> dict[str, Any]:
    """What a cell keeps of its training metrics and its privacy report."""
    attacks = report["attacks"]
    keep = ("top1", "top5", "top1_over_chance", "knn_dist", "knn_dist_other", "psnr", "ssim", "seconds")
    shown = np.load(shown_path)
    n = len(shown["real"])
    record: dict[str, Any] = {
        "utility": {"top1": metrics["identification"]["top1"], "top5": metrics["identification"]["top5"],
                    "top1_interval": metrics["identification"].get("top1_interval"),
                    "chance_top1": metrics["chance_top1"], "chance": metrics.get("chance"),
                    "test_images": metrics.get("test_images"), "updates": metrics["updates"]},
        "attacks": {name: {**{k: round(float(m[k]), 4) for k in keep},
                           "intervals": {k: [round(float(v), 4) for v in iv] for k, iv in m["intervals"].items()},
                           "judges": {j: {k: round(float(jm[k]), 4) for k in ("top1", "top5", "knn_dist")}
                                      for j, jm in m["judges"].items()}}
                    for name, m in attacks.items() if "top1" in m},
        "privacy_model": privacy_score({k: v for k, v in attacks.items() if k in MODEL_ATTACKS}),
        "privacy_all": report["privacy_score"], "prior_ceilings": report.get("prior_ceilings", {}),
        "judges": report["judges"], "chance": report["chance"],
        "judge_top1": next(iter(report["judges"].values()))["accuracy_on_private_faces"],
        "attacked_identities": report["attacked_identities"],
        "private_identities": report["private_identities"],
        "thumbnails": {name: thumbnails(shown[name], n) for name in SHOWN if name in shown.files},
        "thumbnail_verdicts": {name: v for name, v in report.get("grid", {}).get("verdicts", {}).items()
                               if name in SHOWN},
        "real_thumbnails": thumbnails(shown["real"], n),
        "thumbnail_size": THUMB,
    }
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


def run_grid(config: GridConfig, store: CellStore) -> list[Cell]:
    """Compute every unfinished cell of ``config``, writing each into ``store`` as soon as it is done; returns the
    cells computed."""
    from tqdm.auto import tqdm

    todo = [c for c in config.cells() if not store.finished(c, config.settings(c))]
    total = len(config.cells())
    print(f"grid: {total} cells, {total - len(todo)} finished, {len(todo)} to compute", flush=True)
    bar = tqdm(todo, desc="cells", disable=not config.progress, position=0)
    for cell in bar:
        bar.set_postfix_str(f"{cell.data} {cell.defence} seed {cell.seed}")
        settings = config.settings(cell)
        t0 = time.perf_counter()
        record = run_cell(config, cell)
        record.update({"settings": settings, "settings_hash": settings_hash(settings),
                       "cell_seconds": round(time.perf_counter() - t0, 1),
                       "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        store.write(cell, record)
        print(f"cell {cell.data} {cell.defence} seed {cell.seed}: top-1 {record['utility']['top1']:.3f}, privacy "
              f"(model) {record['privacy_model']:.3f}, (all) {record['privacy_all']:.3f}, "
              f"{record['cell_seconds']:.0f} s", flush=True)
    return todo
