"""Compare strategies on equal terms: every agent gets the same FR training episodes (same seeds, so the same FR
initialisation, data order and mixing stream) and is judged by the episode's mean reward and final accuracy.

Learning agents (REINFORCE, an SB3 algorithm) first train for ``train_steps`` env steps with the same seed;
baselines need no training. All agents are then evaluated greedily (``deterministic=True``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

import mixup_env  # noqa: F401
from agents.baselines import FixedK, RandomK, ScheduleK
from agents.evaluation import run_episode
from agents.reinforce import Reinforce
from agents.sb3 import make_agent

__all__ = ["BASELINES", "ComparisonResult", "compare_agents", "format_comparison", "plot_comparison"]

#: the baseline agents besides the fixed-k ones (``fixed_k=<k>``)
BASELINES = ("random_k", "schedule_k")


@dataclass
class ComparisonResult:
    """Per agent and seed: the evaluation episode's mean reward, final clean accuracy and mean k.

    :ivar rows: ``{agent: {"reward": [...], "accuracy": [...], "k": [...]}}``, one entry per seed.
    :ivar seeds: the seeds, in order.
    :ivar train_seconds: per learning agent, training time summed over seeds.
    """

    rows: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    train_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, agent: str, reward: float, accuracy: float, k: float) -> None:
        row = self.rows.setdefault(agent, {"reward": [], "accuracy": [], "k": []})
        row["reward"].append(reward)
        row["accuracy"].append(accuracy)
        row["k"].append(k)

    def mean(self, agent: str, key: str = "reward") -> float:
        return float(np.mean(self.rows[agent][key]))

    def best_fixed(self) -> str | None:
        """The fixed-k agent with the highest mean reward over seeds (``None`` when no fixed-k agent ran)."""
        fixed = [a for a in self.rows if a.startswith("fixed_k=")]
        return max(fixed, key=self.mean) if fixed else None

    def learners(self) -> list[str]:
        """The agents that are not baselines (fixed k, random k, the k schedule): REINFORCE and the SB3 agent."""
        return [a for a in self.rows if not (a.startswith("fixed_k=") or a in BASELINES)]

    def verdicts(self, agents: Sequence[str] | None = None) -> list[str]:
        """Whether each learning agent (default: every one in the result, :meth:`learners`) beat random k and the
        best fixed k on every seed ("beats"), lost on every seed ("loses to"), matched it exactly ("equals") or
        neither ("is mixed against"), with the per-seed paired differences; a reference that did not run is left
        out."""
        out = []
        for a in self.learners() if agents is None else agents:
            if a not in self.rows:
                continue
            for ref in (r for r in ("random_k", self.best_fixed()) if r is not None and r in self.rows):
                diff = np.asarray(self.rows[a]["reward"]) - np.asarray(self.rows[ref]["reward"])
                wins, losses = int((diff > 1e-12).sum()), int((diff < -1e-12).sum())
                if wins == len(diff):
                    verdict = "beats"
                elif losses == len(diff):
                    verdict = "loses to"
                elif wins == losses == 0:
                    verdict = "equals"
                else:
                    verdict = "is mixed against"
                out.append(f"{a} {verdict} {ref}: reward difference {diff.mean():+.4f} "
                           f"(per seed: {', '.join(f'{d:+.4f}' for d in diff)}; wins {wins}/{len(diff)})")
        return out


def compare_agents(
    env_id: str = "mixup_env/FrequencyMixupPerSample-v0",
    env_kwargs: Mapping[str, Any] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    train_steps: int = 2000,
    sb3_algo: str = "ppo",
    include: Sequence[str] = ("fixed", "random", "schedule", "reinforce", "sb3"),
    progress: bool = True,
) -> ComparisonResult:
    """Run the comparison.

    :param env_id: the env id (the paper's granularity, one k per sample, by default).
    :param env_kwargs: ``gymnasium.make`` arguments (reward, episode_steps, data, ...).
    :param seeds: one training seed and one evaluation episode per seed (evaluation reset seed ``10_000 + s``).
    :param train_steps: env steps of training for each learning agent and seed.
    :param sb3_algo: the SB3 algorithm (``ppo``, ``a2c``; ``sac`` on continuous ids).
    :param include: which agent families to run.
    :param progress: print progress.
    """
    kw = dict(env_kwargs or {})
    result = ComparisonResult(seeds=list(seeds))
    env = gym.make(env_id, **kw)
    codec = env.unwrapped.codec
    per_sample_reward = kw.get("reward", "fr_loss") == "fr_loss" and codec.discrete and codec.per_sample
    for seed in tqdm(seeds, desc="seeds", disable=not progress):
        agents: dict[str, Any] = {}
        if "fixed" in include:
            agents.update({f"fixed_k={k}": FixedK(env, k) for k in env.unwrapped.k_values})
        if "random" in include:
            agents["random_k"] = RandomK(env, seed=seed)
        if "schedule" in include:
            agents["schedule_k"] = ScheduleK(env)
        if "reinforce" in include and codec.discrete:
            t0 = time.perf_counter()
            agents["reinforce"] = Reinforce(gym.make(env_id, **kw), seed=seed, per_sample_reward=per_sample_reward
                                            ).learn(train_steps, seed=seed)
            result.train_seconds["reinforce"] = result.train_seconds.get("reinforce", 0.0) + time.perf_counter() - t0
        if "sb3" in include:
            t0 = time.perf_counter()
            model = make_agent(sb3_algo, gym.make(env_id, **kw), seed=seed)
            agents[sb3_algo] = model.learn(train_steps)
            result.train_seconds[sb3_algo] = result.train_seconds.get(sb3_algo, 0.0) + time.perf_counter() - t0
        for name, agent in agents.items():
            ep = run_episode(agent, env, seed=10_000 + seed, deterministic=True)
            result.add(name, ep.mean_reward, ep.final_accuracy, ep.mean_k)
    return result


def format_comparison(result: ComparisonResult) -> str:
    """A table: mean ± std over seeds of reward, final accuracy and mean k, per agent, then the verdicts."""
    lines = [f"{'agent':>14}  {'mean reward':>18}  {'final accuracy':>16}  {'mean k':>12}   (over seeds {result.seeds})"]
    for agent, row in result.rows.items():
        cells = [f"{np.mean(row[key]):8.4f} ± {np.std(row[key]):<7.4f}" for key in ("reward", "accuracy", "k")]
        lines.append(f"{agent:>14}  {cells[0]:>18}  {cells[1]:>16}  {cells[2]:>12}")
    lines.append(f"best fixed k: {result.best_fixed() or 'none run'}")
    lines.extend(result.verdicts())
    if result.train_seconds:
        lines.append("training time: " + ", ".join(f"{a} {s:.0f} s" for a, s in result.train_seconds.items()))
    return "\n".join(lines)


def plot_comparison(result: ComparisonResult, path: str | Path, title: str = "") -> Path:
    """Bar charts (mean, with the standard deviation over seeds) of mean reward and final accuracy per agent.

    Drawn on a :class:`matplotlib.figure.Figure` of its own: the importing program's pyplot backend is left alone."""
    from matplotlib.figure import Figure

    names = list(result.rows)
    fig = Figure(figsize=(max(8, 1.1 * len(names) * 2), 4))
    axes = fig.subplots(1, 2)
    for ax, key, label in zip(axes, ("reward", "accuracy"), ("mean reward (eval episode)", "final clean accuracy")):
        means = [np.mean(result.rows[n][key]) for n in names]
        stds = [np.std(result.rows[n][key]) for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3, color=["#4c72b0" if n.startswith("fixed") else "#dd8452" for n in names])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylabel(label)
    fig.suptitle(title or f"agents over seeds {result.seeds}")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
