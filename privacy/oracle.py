"""The room for adaptivity, measured before agents are judged: the best fixed k, the best hand-written schedule and
the best searched allocation of k (per training phase and kind of sample), under the env's reward and under the
final privacy-accuracy measure.

Every strategy here is a :class:`~agents.baselines.TableK` (``table[phase][kind]``: fixed k is a 1x1 table), run
greedily over whole FR training runs (one env episode each), one per seed. A run's outcome (:class:`Outcome`) is
its summed reward, the FR model's final test accuracy, and its privacy: one minus the mean over training faces of
the largest leakage the env's online attacker scored for them (:mod:`mixup_env.attacker`; the env must have
``attacker_faces``), beside the mean largest mixing weight (exposure).

Two criteria, each maximised by coordinate ascent over the table's cells from the best fixed k (every other k,
or those within ``reach`` places, tried in one cell at a time, kept if the mean over seeds improves; ``rounds``
passes):

* ``reward``: the mean summed reward (``reward:<name>``: of one of the rewards a :class:`Scores` env reward
  scores side by side: one run scores every reward, the strategy's actions do not depend on it);
* ``matched_privacy``: privacy at matched accuracy, per seed the run's privacy minus that of the fixed-k frontier
  of the same seed at the run's accuracy (:func:`privacy.stats.matched_privacy`; an accuracy outside the frontier's
  range is compared with its nearest end: the most accurate fixed k for a run more accurate than all of them,
  which can only favour the frontier), so that "more private" never just means "learned less".

The gap between the best search and the best fixed k under each criterion is the room an agent could close.
Outcomes are JSON records in a :class:`~privacy.grid.CellStore`-like folder (one file per strategy and seed,
written atomically), so an interrupted search continues where it stopped.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.baselines import TableK
from fr_models.trainer import atomic_write
from mixup_env import FrequencyMixupEnv
from mixup_env.rewards import EpisodeStart, Reward, StepRecord, as_reward
from privacy.stats import matched_privacy

__all__ = ["CRITERIA", "Outcome", "OracleResult", "Scores", "hand_schedules", "oracle", "run_table", "score"]

#: What the search maximises.
CRITERIA: tuple[str, ...] = ("reward", "matched_privacy")
Table = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Outcome:
    """One greedy run of a table over a whole FR training run.

    :ivar table: the strategy (``table[phase][kind]``).
    :ivar seed: the env's reset seed.
    :ivar episode_return: the summed reward.
    :ivar accuracy: the final test accuracy.
    :ivar privacy: ``1 -`` the mean over training faces of their largest scored leakage.
    :ivar mean_max_weight: the mean over faces of their largest mixing weight.
    :ivar mean_k: the mean k over the run's mixes.
    :ivar seconds: wall time of the run.
    :ivar returns: the summed reward under each reward a :class:`Scores` env reward scored side by side (empty
        otherwise).
    """

    table: Table
    seed: int
    episode_return: float
    accuracy: float
    privacy: float
    mean_max_weight: float
    mean_k: float
    seconds: float
    returns: dict[str, float] = field(default_factory=dict)


class Scores(Reward):
    """Several rewards on one record stream: the env's reward is the first one's, each one's running total is in
    :attr:`totals` (reset with the episode). A strategy that does not read rewards (a table, a fixed k) is scored
    under all of them by one run.

    :param rewards: name -> a registered name, :class:`~mixup_env.rewards.Reward` or callable (as the env takes).
    """

    def __init__(self, rewards: Mapping[str, Any]) -> None:
        if not rewards:
            raise ValueError("Scores needs at least one reward")
        self.rewards = {name: as_reward(r) for name, r in rewards.items()}
        needs = [r.requires for r in self.rewards.values()]
        self.requires = None if any(n is None for n in needs) else frozenset().union(*needs)
        self.totals: dict[str, float] = dict.fromkeys(self.rewards, 0.0)

    def reset(self, start: EpisodeStart) -> None:
        for r in self.rewards.values():
            r.reset(start)
        self.totals = dict.fromkeys(self.rewards, 0.0)

    def __call__(self, record: StepRecord) -> float:
        values = {}
        for name, r in self.rewards.items():
            out = r(record)
            values[name] = float(sum(out.values())) if isinstance(out, Mapping) else float(out)
            self.totals[name] += values[name]
        return values[next(iter(values))]

    def on_fault(self, record: StepRecord) -> float:
        values = {name: float(r.on_fault(record)) for name, r in self.rewards.items()}
        for name, v in values.items():
            self.totals[name] += v
        return values[next(iter(values))]

    def __repr__(self) -> str:
        return f"Scores({', '.join(self.rewards)})"


def _key(settings: Mapping[str, Any], table: Table, seed: int) -> str:
    blob = json.dumps({"settings": settings, "table": table, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_table(make_env: Callable[[], FrequencyMixupEnv], table: Sequence[Sequence[int]], seed: int,
              feature: str = "loss") -> Outcome:
    """Run ``table`` greedily over one whole FR training run (one episode of ``make_env()``, reset with ``seed``).

    :raises ValueError: an env without an online attacker (its privacy could not be scored).
    """
    env = make_env()
    if env.attacker is None or "leakage" not in env.measured:
        raise ValueError("the oracle scores privacy with the env's online attacker: build the env with "
                         "attacker_faces=<public faces> and a reward that reads leakage (or measure_all=True)")
    policy = TableK(env, table, feature)
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    total, ks, truncated, info = 0.0, [], False, {}
    while not truncated:
        action, _ = policy.predict(obs)
        obs, reward, _, truncated, info = env.step(action)
        total += reward
        ks.append(np.asarray(info["k_per_sample"]).mean())
    summary = env.exposure.summary()
    returns = dict(getattr(env.reward_fn, "totals", {}))
    return Outcome(policy.table, int(seed), float(total), float(info["accuracy"]),
                   1.0 - float(summary.get("mean_max_leakage", math.nan)), float(summary["mean_max_weight"]),
                   float(np.mean(ks)), time.perf_counter() - start, returns)


def hand_schedules(k_values: Sequence[int], phases: int = 2, kinds: int = 2) -> dict[str, Table]:
    """The hand-written strategies: k rising and falling over training (``phases`` steps from the smallest to the
    largest k), and, with several kinds, the hard faces (higher clean loss) mixed more, or less, than the easy."""
    lo, hi = min(k_values), max(k_values)
    snap = sorted(k_values)

    def near(v: float) -> int:
        return min(snap, key=lambda k: (abs(k - v), k))

    ramp = [near(lo + (hi - lo) * p / max(phases - 1, 1)) for p in range(phases)]
    out = {"rising": tuple((k,) * kinds for k in ramp), "falling": tuple((k,) * kinds for k in reversed(ramp))}
    if kinds > 1:
        spread = tuple(near(lo + (hi - lo) * j / (kinds - 1)) for j in range(kinds))
        out["hard_more"] = (spread,) * phases
        out["hard_less"] = (tuple(reversed(spread)),) * phases
    return out


def score(outcomes: Sequence[Outcome], fixed: Mapping[int, Sequence[Outcome]], criterion: str) -> float:
    """The mean over seeds of ``criterion`` for one strategy's ``outcomes``; ``fixed``: every fixed k's outcomes
    (the frontier of ``matched_privacy``, per seed)."""
    if criterion == "reward":
        return float(np.mean([o.episode_return for o in outcomes]))
    if criterion.startswith("reward:"):
        return float(np.mean([o.returns[criterion.removeprefix("reward:")] for o in outcomes]))
    if criterion != "matched_privacy":
        raise ValueError(f"criterion={criterion!r} is unknown: accepted {', '.join(CRITERIA)} or 'reward:<name>' "
                         "(a reward scored side by side by Scores)")
    gains = []
    for o in outcomes:
        points = [f for runs in fixed.values() for f in runs if f.seed == o.seed]
        acc = [p.accuracy for p in points]
        at = min(max(o.accuracy, min(acc)), max(acc))  # compared with the frontier's nearest end outside it
        gains.append(o.privacy - matched_privacy(acc, [p.privacy for p in points], at))
    return float(np.mean(gains))


@dataclass
class OracleResult:
    """What :func:`oracle` found.

    :ivar fixed: k -> its outcomes (one per seed).
    :ivar schedules: name -> its outcomes.
    :ivar searched: criterion -> (best table found, its outcomes, the tables tried in order).
    :ivar scores: criterion -> {"fixed k=<k>" / schedule name / "searched": mean score}.
    :ivar runs: FR training runs computed (not read from the store).
    """

    fixed: dict[int, list[Outcome]]
    schedules: dict[str, list[Outcome]]
    searched: dict[str, tuple[Table, list[Outcome], list[Table]]]
    scores: dict[str, dict[str, float]]
    runs: int

    def gaps(self) -> dict[str, float]:
        """criterion -> the best searched (or hand-written) strategy's score minus the best fixed k's."""
        out = {}
        for criterion, s in self.scores.items():
            best_fixed = max(v for name, v in s.items() if name.startswith("fixed"))
            out[criterion] = max(v for name, v in s.items() if not name.startswith("fixed")) - best_fixed
        return out

    def to_json(self) -> dict[str, Any]:
        return {"fixed": {str(k): [asdict(o) for o in v] for k, v in self.fixed.items()},
                "schedules": {n: [asdict(o) for o in v] for n, v in self.schedules.items()},
                "searched": {c: {"table": t, "outcomes": [asdict(o) for o in runs], "tried": tried}
                             for c, (t, runs, tried) in self.searched.items()},
                "scores": self.scores, "gaps": self.gaps()}


def oracle(make_env: Callable[[], FrequencyMixupEnv], settings: Mapping[str, Any], seeds: Sequence[int],
           phases: int = 2, kinds: int = 2, rounds: int = 1, store: str | Path | None = None,
           criteria: Sequence[str] = CRITERIA, feature: str = "loss",
           log: Callable[[str], None] | None = print, compute: bool = True, reach: int | None = None) -> OracleResult:
    """The oracle analysis (module docstring) on the env ``make_env()`` builds.

    :param make_env: builds the env (a per-sample mode if ``kinds > 1``; with ``attacker_faces``).
    :param settings: what identifies the env's settings in the store (every argument that changes a run).
    :param seeds: the seeds each strategy runs with.
    :param phases: training phases of the searched tables; ``kinds``: kinds of sample.
    :param rounds: passes of coordinate ascent per criterion.
    :param store: a folder of outcome records (``None``: nothing kept).
    :param criteria: of :data:`CRITERIA`.
    :param log: a line per computed run (``None``: quiet).
    :param reach: try in each cell only the k within ``reach`` places of its current one in ``k_values``
        (``None``: every k; ``1``: the neighbours, about half the runs for five k values).
    :param compute: run what the store lacks (``False``: a missing record raises ``LookupError``: a report from the
        records alone).
    """
    bad = [c for c in criteria if c not in CRITERIA and not c.startswith("reward:")]
    if bad or not seeds or phases < 1 or kinds < 1:
        raise ValueError(f"criteria {bad} unknown (accepted {', '.join(CRITERIA)}), or no seeds, or phases/kinds < 1")
    folder = Path(store) if store is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    computed = [0]
    k_values = make_env().k_values

    def runs(table: Table) -> list[Outcome]:
        out = []
        for seed in seeds:
            path = folder / f"{_key(settings, table, seed)}.json" if folder is not None else None
            if path is not None and path.is_file():
                d = json.loads(path.read_text())
                d.pop("settings")
                out.append(Outcome(**{**d, "table": tuple(tuple(r) for r in d["table"])}))
                continue
            if not compute:
                raise LookupError(f"the store {folder} has no record of table {table}, seed {seed}: run the oracle "
                                  "to compute it")
            o = run_table(make_env, table, seed, feature)
            computed[0] += 1
            if path is not None:
                text = json.dumps({**asdict(o), "settings": dict(settings)}, default=str, indent=1)
                atomic_write(path, lambda tmp: tmp.write_text(text))
            if log is not None:
                log(f"oracle: {table} seed {seed}: return {o.episode_return:.4f}, accuracy {o.accuracy:.3f}, "
                    f"privacy {o.privacy:.3f}, {o.seconds:.0f} s")
            out.append(o)
        return out

    fixed = {k: runs(((k,),)) for k in k_values}
    schedules = {name: runs(t) for name, t in hand_schedules(k_values, phases, kinds).items()}
    scores: dict[str, dict[str, float]] = {}
    searched: dict[str, tuple[Table, list[Outcome], list[Table]]] = {}
    for criterion in criteria:
        s = {f"fixed k={k}": score(v, fixed, criterion) for k, v in fixed.items()}
        s.update({name: score(v, fixed, criterion) for name, v in schedules.items()})
        best_k = max(fixed, key=lambda k: s[f"fixed k={k}"])
        table = tuple((best_k,) * kinds for _ in range(phases))
        best, best_runs, tried = s[f"fixed k={best_k}"], fixed[best_k], [table]
        for _ in range(rounds):
            for p, j in itertools.product(range(phases), range(kinds)):
                here = k_values.index(table[p][j])
                for k in k_values:
                    if k == table[p][j] or (reach is not None and abs(k_values.index(k) - here) > reach):
                        continue
                    cand = tuple(tuple(k if (pp, jj) == (p, j) else table[pp][jj] for jj in range(kinds))
                                 for pp in range(phases))
                    tried.append(cand)
                    cand_runs = runs(cand)
                    v = score(cand_runs, fixed, criterion)
                    if v > best:
                        table, best, best_runs = cand, v, cand_runs
        s["searched"] = best
        scores[criterion], searched[criterion] = s, (table, best_runs, tried)
    return OracleResult(fixed, schedules, searched, scores, computed[0])
