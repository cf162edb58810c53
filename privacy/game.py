"""The game at small scale (issue 17): the oracle analysis and the co-trained agents under the new rewards, on one
data set, several seeds, written as a section of ``docs/benchmarks.md``.

One FR training run is one env episode (``epochs`` passes over the private training faces, the real recipe), the
private and public faces are the defence grid's identity split, and every run scores privacy with the env's online
attacker trained on the public faces (:mod:`mixup_env.attacker`). Every run is scored under all of
:data:`GAME_REWARDS` at once (:class:`privacy.oracle.Scores`); a co-trained agent learns from one of them.

* the oracle (:func:`privacy.oracle.oracle`): fixed k, the hand-written schedules, and the searched tables of k per
  training phase and kind of sample, under the attack-aware reward and under privacy at matched accuracy;
* the agents (:data:`GAME_AGENTS`), each co-trained (:func:`agents.cotrain.cotrain`) under each reward: the FR
  model that learned beside the agent is the one measured.

Records are JSON files under ``store`` (one per run, atomic), so an interrupted run continues where it stopped
(``benchmarks/game.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.cotrain import cotrain
from fr_models.data import FaceData, load_faces, split_identities
from fr_models.trainer import atomic_write
from mixup_env import FrequencyMixupEnv
from privacy.oracle import Outcome, OracleResult, Scores, oracle, score
from privacy.stats import chance_levels

__all__ = ["GAME_AGENTS", "GAME_REWARDS", "AgentRun", "GameConfig", "game_report", "run_agents", "run_game_oracle"]

#: The rewards of the game, each scored on every run; an agent learns from one.
GAME_REWARDS: tuple[str, ...] = ("fr_loss_learnable", "attack_aware", "constrained")
#: The agents co-trained: the paper's REINFORCE, PPO and SAC with the shared per-sample policy.
GAME_AGENTS: tuple[str, ...] = ("reinforce", "ppo", "sac")


@dataclass(frozen=True)
class GameConfig:
    """The settings of the game's runs.

    :ivar data: the data set (a name under ``$MIXUP_ENV_DATA``, or ``"synthetic"``).
    :ivar seeds: the seeds of every strategy.
    :ivar epochs: passes over the private training faces per FR run (one episode).
    :ivar image_size: faces resized to this size (the real recipe's 64).
    :ivar recipe: the FR recipe.
    :ivar batch_size: faces per step.
    :ivar public_fraction: the attacker's share of identities (the grid's split, ``split_seed``).
    :ivar validation_fraction: the validation split of the constrained and attack-aware rewards.
    :ivar attacker: :class:`~mixup_env.attacker.OnlineAttacker` options.
    :ivar phases: training phases of the oracle's tables; ``kinds``: kinds of sample; ``rounds``: search passes;
        ``reach``: the k tried per cell (:func:`privacy.oracle.oracle`; 1: the neighbours of the current k).
    :ivar agents: of :data:`GAME_AGENTS`; ``rewards``: of :data:`GAME_REWARDS`.
    """

    data: str = "att_faces"
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 100
    image_size: int | None = 64
    recipe: str = "real"
    batch_size: int = 64
    public_fraction: float = 0.3
    split_seed: int = 0
    validation_fraction: float = 0.2
    attacker: dict[str, Any] = field(default_factory=lambda: {"components": 128, "simulated": 1024,
                                                              "refit_every": 50})
    phases: int = 2
    kinds: int = 2
    rounds: int = 1
    reach: int | None = 1
    agents: tuple[str, ...] = GAME_AGENTS
    rewards: tuple[str, ...] = GAME_REWARDS

    def settings(self) -> dict[str, Any]:
        """What identifies a run's settings in the store (the seeds, agents and rewards are per record)."""
        d = asdict(self)
        for name in ("seeds", "agents", "rewards", "phases", "kinds", "rounds", "reach"):
            d.pop(name)
        return d

    def faces(self) -> tuple[FaceData, FaceData]:
        """``(private, public)``: the identity split."""
        faces = load_faces(self.data)
        private, public = split_identities(faces.labels, self.public_fraction, self.split_seed)
        return faces.subset(private), faces.subset(public)

    def make_env(self, faces: tuple[FaceData, FaceData], reward: Any, continuous: bool = False) -> FrequencyMixupEnv:
        """The env of one run: one episode = one FR run of ``epochs``; every game reward scored (``reward`` first)."""
        private, public = faces
        first = [reward] if isinstance(reward, str) else []
        rewards = Scores({name: name for name in [*first, *[r for r in GAME_REWARDS if r not in first]]})
        n_train = round(len(private.labels) * 0.8 * (1 - self.validation_fraction))  # about: the env's split
        steps = max(1, round(self.epochs * n_train / self.batch_size))
        mode = "sample_continuous" if continuous else "sample_discrete"
        return FrequencyMixupEnv(data=private, attacker_faces=public, attacker_kwargs=dict(self.attacker),
                                 action_mode=mode, continuous_rounding="dither" if continuous else "nearest",
                                 reward=rewards,
                                 validation_fraction=self.validation_fraction, image_size=self.image_size,
                                 recipe=self.recipe, batch_size=self.batch_size, episode_steps=steps,
                                 eval_every=steps)


@dataclass(frozen=True)
class AgentRun:
    """One agent co-trained over one FR run under one reward.

    :ivar agent: of :data:`GAME_AGENTS`; ``reward``: the one it learned from; ``seed``.
    :ivar returns: the run's summed reward under each game reward.
    :ivar accuracy: the co-trained FR model's final test accuracy.
    :ivar privacy: ``1 -`` the mean largest leakage the online attacker scored per face.
    :ivar mean_max_weight: the mean largest mixing weight per face.
    :ivar k_distribution: ``{"k": share of faces mixed with k}``.
    :ivar seconds: wall time.
    """

    agent: str
    reward: str
    seed: int
    returns: dict[str, float]
    accuracy: float
    privacy: float
    mean_max_weight: float
    k_distribution: dict[str, float]
    seconds: float


def _make_agent(name: str, env: Any, seed: int) -> Any:
    from agents import Reinforce, make_agent

    if name == "reinforce":
        return Reinforce(env, seed=seed, rollout=4, gamma=0.9)
    if name == "ppo":
        return make_agent("ppo", env, seed=seed, policy="per_sample", n_steps=32, batch_size=32)
    if name == "sac":
        return make_agent("sac", env, seed=seed, policy="per_sample", learning_starts=32)
    raise ValueError(f"agent {name!r} is unknown: accepted {', '.join(GAME_AGENTS)}")


def _record_path(store: Path, config: GameConfig, kind: str, **key: Any) -> Path:
    blob = json.dumps({"settings": config.settings(), "kind": kind, **key}, sort_keys=True, default=str)
    return store / kind / f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"


def run_agents(config: GameConfig, store: str | Path, log: Callable[[str], None] | None = print,
               compute: bool = True) -> list[AgentRun]:
    """Co-train every agent under every reward for every seed (computing only what ``store`` lacks; with
    ``compute=False`` only the records are read, the missing ones skipped)."""
    faces = config.faces()
    out = []
    for agent in config.agents:
        for reward in config.rewards:
            for seed in config.seeds:
                path = _record_path(Path(store), config, "agents", agent=agent, reward=reward, seed=seed)
                if path.is_file():
                    d = json.loads(path.read_text())
                    d.pop("settings", None)
                    out.append(AgentRun(**d))
                    continue
                if not compute:
                    continue
                env = config.make_env(faces, reward, continuous=agent == "sac")
                start = time.perf_counter()
                result = cotrain(lambda e, a=agent, s=seed: _make_agent(a, e, s), env, seed=seed)
                run = AgentRun(agent, reward, int(seed), result.returns, result.accuracy, 1.0 - float(result.exposure.get("mean_max_leakage", math.nan)),
                               float(result.exposure["mean_max_weight"]), result.k_distribution,
                               time.perf_counter() - start)
                text = json.dumps({**asdict(run), "settings": config.settings()}, indent=1, default=str)
                atomic_write(path, lambda tmp, t=text: tmp.write_text(t))
                if log is not None:
                    log(f"game: {agent} under {reward}, seed {seed}: accuracy {run.accuracy:.3f}, privacy "
                        f"{run.privacy:.3f}, {run.seconds:.0f} s")
                out.append(run)
    return out


def run_game_oracle(config: GameConfig, store: str | Path, log: Callable[[str], None] | None = print,
                    compute: bool = True) -> OracleResult | None:
    """The oracle analysis on the game's env, under the attack-aware reward and privacy at matched accuracy
    (``compute=False``: from the records only; ``None`` if they are incomplete)."""
    faces = config.faces()
    try:
        return oracle(lambda: config.make_env(faces, "attack_aware"), config.settings(), config.seeds,
                      config.phases, config.kinds, config.rounds, Path(store) / "oracle",
                      ("reward:attack_aware", "matched_privacy"), log=log, compute=compute, reach=config.reach)
    except LookupError:
        if compute:
            raise
        return None


def _mean_sd(values: Sequence[float]) -> str:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if v.size > 1 else f"{v.mean():.3f}"


def _per_seed_gain(runs: Sequence[Any], fixed: dict[int, list[Outcome]]) -> list[float]:
    """Privacy at matched accuracy per run (its seed's fixed-k frontier; :func:`privacy.oracle.score`)."""
    return [score([Outcome(((0,),), r.seed, 0.0, r.accuracy, r.privacy, 0.0, 0.0, 0.0)], fixed, "matched_privacy")
            for r in runs]


def game_report(config: GameConfig, result: OracleResult | None, agents: Sequence[AgentRun], command: str,
                chance: dict[str, float] | None = None) -> str:
    """The game's section of ``docs/benchmarks.md``, from the records alone."""
    lines = ["## The game: oracle and co-trained agents (issue 17)", "",
             f"`{command}`; {config.data}, recipe `{config.recipe}` at {config.image_size} px, one FR run = one episode "
             f"of {config.epochs} epochs, seeds {list(config.seeds)}, the grid's identity split (public share "
             f"{config.public_fraction}), validation split {config.validation_fraction}. Written by the script: do not "
             "edit by hand. Mean ± std over seeds.", "",
             "Privacy is 1 - the mean over training faces of the largest leakage the env's online attacker (a linear "
             "data-level attacker trained on the public faces, `mixup_env.attacker`) scored for them; *matched* is "
             "the privacy minus the fixed-k frontier's at the same accuracy (same seed). "
             + (f"Chance: uniform {chance['uniform']:.3f}, majority class {chance['majority']:.3f}."
                if chance else ""), ""]
    if result is not None:
        names = [*(f"fixed k={k}" for k in result.fixed), *result.schedules, *(f"searched ({c})" for c in
                                                                             result.searched)]
        runs = {**{f"fixed k={k}": v for k, v in result.fixed.items()}, **result.schedules,
                **{f"searched ({c})": v[1] for c, v in result.searched.items()}}
        tables = {**{f"fixed k={k}": ((k,),) for k in result.fixed},
                  **{n: v[0].table for n, v in result.schedules.items() if v},
                  **{f"searched ({c})": v[0] for c, v in result.searched.items()}}
        lines += ["### The oracle", "", f"Tables of k per training phase (rows, {config.phases}) and kind of sample "
                  f"(columns, {config.kinds}: faces ranked by their clean loss in the batch, easy first); coordinate "
                  f"ascent ({config.rounds} pass, trying the k within {config.reach or 'any number of'} place(s) of "
                  "each cell's) from the best fixed k under each criterion. "
                  f"{result.runs} FR runs computed in this call.", "",
                  "| strategy | table | " + " | ".join(f"return ({r})" for r in config.rewards)
                  + " | accuracy | privacy | matched | mean largest weight |",
                  "|---|---|" + "---|" * (len(config.rewards) + 4)]
        for name in names:
            rs = runs[name]
            rets = " | ".join(_mean_sd([o.returns.get(r, math.nan) for o in rs]) for r in config.rewards)
            lines.append(f"| {name} | {tables[name]} | {rets} | {_mean_sd([o.accuracy for o in rs])} | "
                         f"{_mean_sd([o.privacy for o in rs])} | {_mean_sd(_per_seed_gain(rs, result.fixed))} | "
                         f"{_mean_sd([o.mean_max_weight for o in rs])} |")
        lines += ["", "Room for adaptivity (best non-constant strategy minus best fixed k, mean over seeds): "
                  + ", ".join(f"{c}: {g:+.4f}" for c, g in result.gaps().items()) + ".", ""]
    if agents:
        lines += ["### Co-trained agents", "", "Each agent learns from one reward during the FR run it shapes "
                  "(`agents.cotrain`); the FR model at the end of that run is measured. *vs best fixed* is the "
                  "agent's return under its own reward minus the best fixed k's under that reward.", "",
                  "| agent | reward | return (its reward) | vs best fixed | accuracy | privacy | matched | mean k | s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for a in config.agents:
            for r in config.rewards:
                rs = [x for x in agents if x.agent == a and x.reward == r]
                if not rs:
                    continue
                ret = [x.returns.get(r, math.nan) for x in rs]
                best = (max(np.mean([o.returns.get(r, math.nan) for o in v]) for v in result.fixed.values())
                        if result is not None else math.nan)
                mean_k = [sum(float(k) * p for k, p in x.k_distribution.items()) for x in rs]
                gains = _per_seed_gain(rs, result.fixed) if result is not None else [math.nan]
                lines.append(f"| {a} | {r} | {_mean_sd(ret)} | {np.mean(ret) - best:+.4f} | "
                             f"{_mean_sd([x.accuracy for x in rs])} | {_mean_sd([x.privacy for x in rs])} | "
                             f"{_mean_sd(gains)} | {_mean_sd(mean_k)} | {np.mean([x.seconds for x in rs]):.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def chance(config: GameConfig) -> dict[str, float]:
    """Uniform and majority-class accuracy on the private faces' identities."""
    private, _ = config.faces()
    return chance_levels(private.labels, private.num_classes)
