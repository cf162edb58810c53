"""The paper's strategy network, trained by REINFORCE with a baseline (Wang et al., 2024), in one file.

The strategy network looks at each sample of the upcoming batch (its features: the current FR model's loss,
confidence and margin on it, its identity's frequency) together with the global training state, and outputs a
distribution over k for that sample. Training alternates, one step each: the env mixes the batch with the
sampled k and runs one FR update (the FR network minimises its loss), then the strategy takes one REINFORCE
step towards actions whose reward beat the baseline (with the paper's reward, the FR loss: the strategy
maximises what the FR network minimises).

Works on the env's discrete modes: ``sample_discrete`` (one k per sample, the paper's granularity) and
``batch_discrete`` (the per-sample logits are averaged into one choice for the batch).

Usage::

    env = gymnasium.make("mixup_env/FrequencyMixupPerSample-v0")
    agent = Reinforce(env, seed=0).learn(total_timesteps=2000)
    action, _ = agent.predict(obs, deterministic=True)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fr_models.trainer import atomic_torch_save, load_checkpoint, seeded
from mixup_env import GLOBAL_FEATURES, SAMPLE_FEATURES, FrequencyMixupEnv, split_observation

__all__ = ["Reinforce", "StrategyNetwork"]


class StrategyNetwork(nn.Module):
    """Per-sample MLP: [sample features, global features] -> logits over the K choices of k.

    :param num_choices: K, the number of k values.
    :param hidden: width of the hidden layers.
    """

    def __init__(self, num_choices: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(len(SAMPLE_FEATURES) + len(GLOBAL_FEATURES), hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, num_choices),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """:param obs: ``(B, D)`` flat observations. :return: ``(B, N, K)`` per-sample logits."""
        glob, per_sample = split_observation(obs)  # works on tensors: slicing and reshape only
        n = per_sample.shape[1]
        return self.net(torch.cat([per_sample, glob.unsqueeze(1).expand(-1, n, -1)], dim=2))


class Reinforce:
    """REINFORCE with a running baseline; the strategy network picks k per sample.

    :param env: a mixup_env env in a discrete action mode (or a wrapper of one).
    :param learning_rate: Adam learning rate of the strategy network.
    :param hidden: hidden width of the strategy network.
    :param baseline_momentum: momentum of the running statistics: the baseline for a scalar reward is their
        moving average (per-sample rewards use the mean of the other samples of the same step), and advantages
        are divided by the running spread of reward minus baseline.
    :param entropy_coef: weight of an entropy bonus that keeps the strategy exploring.
    :param per_sample_reward: use each sample's own FR loss on the mixed batch
        (``info["mixed_loss_per_sample"]``) as its reward, instead of the env's scalar reward for all samples.
        Only meaningful with the ``fr_loss`` reward; sharper credit assignment for per-sample actions.
    :param rollout: env steps per strategy update. 1 (the default): one update per step, as above. More: the
        steps are collected first, each step's return ``G_t = r_t + gamma * G_{t+1}`` is computed over the
        rollout (cut at its end and at an episode's end), and one update is made on all of them, with the
        rollout's own mean return as the baseline and its spread as the scale: a baseline that is valid from the
        first update, with no running statistics to warm up. With per-sample rewards, a sample's return is its own
        reward plus the discounted returns of the steps after it (their mean over samples).
    :param gamma: discount of the returns (``rollout > 1``), in ``[0, 1]``.
    :param seed: seed of the network initialisation and of the action sampling.
    :param device: torch device of the strategy network.
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        learning_rate: float = 3e-3,
        hidden: int = 32,
        baseline_momentum: float = 0.95,
        entropy_coef: float = 0.05,
        per_sample_reward: bool = False,
        rollout: int = 1,
        gamma: float = 0.0,
        seed: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        base = env.unwrapped
        if not isinstance(base, FrequencyMixupEnv) or not base.codec.discrete:
            mode = getattr(base, "action_mode", type(base).__name__)
            raise ValueError(f"Reinforce needs a mixup_env env in a discrete action mode "
                             f"(sample_discrete or batch_discrete), got {mode!r}")
        if int(rollout) < 1 or not 0 <= gamma <= 1:
            raise ValueError(f"rollout={rollout} must be >= 1 and gamma={gamma} in [0, 1]")
        self.rollout, self.gamma = int(rollout), float(gamma)
        self.env = env
        self.per_sample_actions = base.codec.per_sample
        self.per_sample_reward = bool(per_sample_reward)
        self.config = {"learning_rate": float(learning_rate), "hidden": int(hidden),
                       "baseline_momentum": float(baseline_momentum), "entropy_coef": float(entropy_coef),
                       "per_sample_reward": self.per_sample_reward, "rollout": self.rollout, "gamma": self.gamma}
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        with seeded(0 if seed is None else int(seed)):
            self.policy = StrategyNetwork(len(base.k_values), hidden).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=learning_rate)
        self.baseline_momentum = float(baseline_momentum)
        self.entropy_coef = float(entropy_coef)
        self.reward_mean = 0.0
        self.reward_var = 1.0
        self.updates = 0
        self.num_timesteps = 0

    # --- acting ------------------------------------------------------------------------------------------
    def _logits(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, N, K)`` per-sample logits, or ``(B, 1, K)`` averaged over samples for per-batch actions."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        logits = self.policy(x.reshape(-1, x.shape[-1]))
        return logits if self.per_sample_actions else logits.mean(dim=1, keepdim=True)

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, None]:
        """SB3-style: ``(action, None)``; the action has the env's action shape (batched if the obs is)."""
        with torch.no_grad():
            logits = self._logits(observation)
            if deterministic:
                idx = logits.argmax(-1)
            else:
                probs = torch.softmax(logits, -1).cpu()
                idx = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=self.generator)
                idx = idx.reshape(probs.shape[:-1])
        action = idx.cpu().numpy().astype(np.int64)
        action = action if self.per_sample_actions else action[:, 0]
        return (action[0] if np.asarray(observation).ndim == 1 else action), None

    # --- learning ----------------------------------------------------------------------------------------
    def update(self, obs: np.ndarray, action: np.ndarray, reward: float | np.ndarray) -> dict[str, float]:
        """One REINFORCE step on one env step.

        :param obs: the observation the action was chosen from.
        :param action: the env action taken (``(N,)`` indices per sample, or one index).
        :param reward: the scalar reward, or ``(N,)`` per-sample rewards.
        :return: ``loss``, ``advantage`` (mean) and ``entropy`` of this step, and ``skipped``: ``1.0`` when a
            reward was not finite (an env fault step: ``info["mixed_loss_per_sample"]`` is then NaN), in which case
            nothing was learned and the agent's state is unchanged.
        """
        r = np.asarray(reward, dtype=np.float64).reshape(-1)
        if not np.isfinite(r).all():
            return {"loss": float("nan"), "advantage": float("nan"), "entropy": float("nan"), "skipped": 1.0}
        m = self.baseline_momentum
        # Baseline: with per-sample rewards, the mean reward of the *other* samples of the same step (it removes
        # whatever the whole step shares, such as how far training is); with one scalar reward, a running mean,
        # started at the first reward itself (so the first step, with nothing to compare it to, has advantage 0).
        if r.size > 1:
            baseline = (r.sum() - r) / (r.size - 1)
        else:
            baseline = np.full_like(r, self.reward_mean if self.updates else float(r[0]))
            self.reward_mean = m * self.reward_mean + (1 - m) * float(r[0]) if self.updates else float(r[0])
        # Scale: the running spread of (reward - baseline), so the step size does not depend on the reward's units;
        # it starts at the first step that has a baseline to compare with.
        spread = float(((r - baseline) ** 2).mean())
        first = self.updates == (0 if r.size > 1 else 1)
        if first:
            self.reward_var = max(spread, 1e-8)
        elif self.updates:
            self.reward_var = m * self.reward_var + (1 - m) * spread
        advantage = (r - baseline) / np.sqrt(self.reward_var + 1e-8)

        logits = self._logits(obs)[0]  # (N or 1, K)
        logp = torch.log_softmax(logits, -1)
        idx = torch.as_tensor(np.asarray(action).reshape(-1), dtype=torch.long, device=self.device)
        chosen = logp.gather(1, idx.unsqueeze(1)).squeeze(1)  # (N or 1,)
        adv = torch.as_tensor(advantage, dtype=torch.float32, device=self.device).expand_as(chosen)
        loss, entropy = self._step(logp, chosen, adv)
        return {"loss": loss, "advantage": float(advantage.mean()), "entropy": entropy, "skipped": 0.0}

    def _step(self, logp: torch.Tensor, chosen: torch.Tensor, adv: torch.Tensor) -> tuple[float, float]:
        """One gradient step on ``-(adv * log p(chosen)) - entropy_coef * entropy``; returns (loss, entropy)."""
        entropy = -(logp.exp() * logp).sum(-1).mean()
        loss = -(adv * chosen).mean() - self.entropy_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return loss.item(), entropy.item()

    def update_rollout(self, obs: list[np.ndarray], actions: list[np.ndarray], rewards: list[Any],
                       ends: list[bool]) -> dict[str, float]:
        """One REINFORCE step on a rollout of env steps (``rollout > 1``; see the class docstring).

        :param obs: each step's observation.
        :param actions: each step's action.
        :param rewards: each step's scalar reward, or ``(N,)`` per-sample rewards.
        :param ends: whether the episode ended at that step (returns do not flow across it).
        :return: ``loss``, ``advantage`` (mean, 0 by construction), ``entropy``, ``return`` (mean) and ``skipped``
            (``1.0``: a non-finite reward; nothing learned).
        """
        r = [np.asarray(x, dtype=np.float64).reshape(-1) for x in rewards]
        if not all(np.isfinite(x).all() for x in r):
            return {"loss": float("nan"), "advantage": float("nan"), "entropy": float("nan"),
                    "return": float("nan"), "skipped": 1.0}
        returns: list[np.ndarray] = [np.zeros(0)] * len(r)
        future = 0.0
        for t in range(len(r) - 1, -1, -1):
            if ends[t]:
                future = 0.0
            returns[t] = r[t] + self.gamma * future
            future = float(returns[t].mean())
        flat = np.concatenate(returns)
        scale = float(flat.std()) if flat.size > 1 else 0.0
        x = torch.as_tensor(np.stack([np.asarray(o, dtype=np.float32) for o in obs]), device=self.device)
        logits = self._logits(x)  # (T, N or 1, K)
        logp = torch.log_softmax(logits, -1)
        idx = torch.as_tensor(np.stack([np.asarray(a).reshape(-1) for a in actions]), dtype=torch.long,
                              device=self.device)  # (T, N or 1)
        chosen = logp.gather(2, idx.unsqueeze(2)).squeeze(2)
        g = torch.as_tensor(np.stack([np.broadcast_to(ret, (chosen.shape[1],)) if ret.size == 1 else ret
                                      for ret in returns]), dtype=torch.float32, device=self.device)
        adv = (g - g.mean()) / (scale + 1e-8)
        loss, entropy = self._step(logp, chosen, adv)
        return {"loss": loss, "advantage": float(adv.mean()), "entropy": entropy, "return": float(flat.mean()),
                "skipped": 0.0}

    def learn(self, total_timesteps: int, seed: int | None = None, progress_bar: bool = False,
              on_step: Callable[[dict[str, Any]], None] | None = None) -> Reinforce:
        """Alternate env steps (one FR update each) and strategy updates for ``total_timesteps`` steps.

        :param total_timesteps: env steps to run.
        :param seed: seed of the first ``reset``.
        :param progress_bar: show a tqdm progress bar.
        :param on_step: called with each step's ``info`` (e.g. to collect statistics).
        """
        if total_timesteps < 1:
            raise ValueError(f"total_timesteps={total_timesteps} is invalid: accepted a positive integer")
        obs, _ = self.env.reset(seed=seed)
        buffer: tuple[list[Any], ...] = ([], [], [], [])
        for step in tqdm(range(total_timesteps), disable=not progress_bar, desc="REINFORCE"):
            action, _ = self.predict(obs)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            r = info["mixed_loss_per_sample"] if self.per_sample_reward else reward
            if self.per_sample_reward and not self.per_sample_actions:
                r = float(np.mean(r))
            if self.rollout == 1:
                self.update(obs, action, r)
            else:
                for part, value in zip(buffer, (obs, action, r, terminated or truncated)):
                    part.append(value)
                if len(buffer[0]) == self.rollout or step == total_timesteps - 1:
                    self.update_rollout(*buffer)
                    buffer = ([], [], [], [])
            self.num_timesteps += 1
            if on_step is not None:
                on_step(info)
            obs = next_obs
            if terminated or truncated:
                obs, _ = self.env.reset()
        return self

    # --- saving ------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the strategy network and its state atomically (loads with ``weights_only=True``)."""
        return atomic_torch_save({"config": self.config, "policy": self.policy.state_dict(),
                                  "optimizer": self.optimizer.state_dict(), "reward_mean": self.reward_mean,
                                  "reward_var": self.reward_var, "updates": self.updates}, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], env: gym.Env[Any, Any], device: str | torch.device = "cpu") -> Reinforce:
        """Rebuild an agent saved by :meth:`save` for ``env``."""
        state = load_checkpoint(path, "REINFORCE agent checkpoint",
                                ("config", "policy", "optimizer", "reward_mean", "reward_var", "updates"), device)
        agent = cls(env, device=device, **state["config"])
        agent.policy.load_state_dict(state["policy"])
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.reward_mean, agent.reward_var = float(state["reward_mean"]), float(state["reward_var"])
        agent.updates = int(state["updates"])
        return agent
