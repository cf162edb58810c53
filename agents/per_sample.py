"""A Stable-Baselines3 actor-critic policy with one small network shared across the batch's samples.

The per-sample envs (``mixup_env/FrequencyMixupPerSample-v0`` and its continuous twin) ask for one decision per
sample of the upcoming batch. SB3's default policy reads the whole flat observation with one MLP and gives every
batch position its own output weights: what it learns for position 3 says nothing about position 40, and the
action space grows with the batch. :class:`PerSamplePolicy` instead runs one network on each sample's block of
the observation (its :data:`~mixup_env.envs.frequency_mixup.SAMPLE_FEATURES`, with the global features
appended), and one shared output layer turns each sample's latent into its action logits (or its Gaussian mean):
the same per-sample features give the same action distribution at any batch position, and permuting the samples
permutes the actions. The value function reads the mean of the per-sample latents and the global features.

Usable by PPO and A2C (``policy=PerSamplePolicy``) on ``MultiDiscrete([K] * N)`` and ``Box(-1, 1, (N,))``
actions; the continuous one's log standard deviation is one shared value. Observations normalised per entry
(``VecNormalize``) treat positions differently: use the env's own scaling (its observations are in [0, 1]).

For SAC, :class:`PerSampleSACPolicy` (``Box(-1, 1, (N,))`` actions) does the same for the actor (each sample's
mean and log standard deviation from the shared network) and for the critics: each Q network reads every sample's
block with its action through one shared network and pools them (a mean) with the global features, so Q treats
the batch as a set. Pair it with the env's ``continuous_rounding="dither"``, under which the expected k follows
the action: with the nearest rounding a whole interval of actions around 0 gives the same k, the reward is flat
there, and a policy that starts at 0 has nothing to climb (the grid's SAC chose k = 4 for every face).

>>> import gymnasium as gym, mixup_env
>>> from stable_baselines3 import PPO
>>> env = gym.make("mixup_env/FrequencyMixupPerSample-v0", batch_size=8, episode_steps=4, recipe="tiny")
>>> model = PPO(PerSamplePolicy, env, n_steps=4, batch_size=4, seed=0)
>>> sum(p.numel() for p in model.policy.parameters()) < 15_000
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.sac.policies import Actor, SACPolicy
from torch import nn

from mixup_env.envs.frequency_mixup import GLOBAL_FEATURES, SAMPLE_FEATURES, split_observation

__all__ = ["PerSampleExtractor", "PerSampleHead", "PerSamplePolicy", "PerSampleQ", "PerSampleSACPolicy"]


class PerSampleExtractor(nn.Module):
    """Per-sample latents from one shared MLP, and a value latent from their mean (SB3's ``mlp_extractor``).

    :param n_samples: samples per observation (the env's batch size).
    :param hidden: width of the per-sample latent.
    :ivar latent_dim_pi: ``n_samples * hidden`` (the per-sample latents, sample-major).
    :ivar latent_dim_vf: ``hidden``.
    """

    def __init__(self, n_samples: int, hidden: int = 64) -> None:
        super().__init__()
        g, f = len(GLOBAL_FEATURES), len(SAMPLE_FEATURES)
        self.n_samples, self.hidden = int(n_samples), int(hidden)
        self.sample_net = nn.Sequential(nn.Linear(f + g, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.value_in = nn.Sequential(nn.Linear(hidden + g, hidden), nn.Tanh())
        self.latent_dim_pi, self.latent_dim_vf = self.n_samples * self.hidden, self.hidden

    def per_sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, hidden)`` latents of each sample and the ``(B, G)`` global features."""
        glob, samples = split_observation(obs)
        x = torch.cat([samples, glob.unsqueeze(1).expand(-1, samples.shape[1], -1)], dim=-1)
        return self.sample_net(x), glob

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.per_sample(features)[0].flatten(1)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        latents, glob = self.per_sample(features)
        return self.value_in(torch.cat([latents.mean(1), glob], dim=-1))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents, glob = self.per_sample(features)
        return latents.flatten(1), self.value_in(torch.cat([latents.mean(1), glob], dim=-1))


class PerSampleHead(nn.Module):
    """One linear layer applied to every sample's latent: ``(B, N * hidden)`` to ``(B, N * outputs)``, sample-major
    (as ``MultiDiscrete([K] * N)`` splits its logits)."""

    def __init__(self, hidden: int, outputs: int) -> None:
        super().__init__()
        self.hidden = int(hidden)
        self.linear = nn.Linear(hidden, outputs)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.linear(latent.view(latent.shape[0], -1, self.hidden)).flatten(1)


def _samples_in(observation_space: spaces.Space) -> int:
    """The batch size of a per-sample observation space (:func:`~mixup_env.envs.frequency_mixup.split_observation`)."""
    g, f = len(GLOBAL_FEATURES), len(SAMPLE_FEATURES)
    size = int(np.prod(observation_space.shape or (0,)))
    if size < g + f or (size - g) % f:
        raise ValueError(f"a per-sample policy reads mixup_env's per-sample observations ({g} + N*{f} entries), got "
                         f"an observation space of shape {observation_space.shape}")
    return (size - g) // f


def _check_box(action_space: spaces.Space, n: int, owner: str) -> None:
    if not isinstance(action_space, spaces.Box) or action_space.shape != (n,):
        raise ValueError(f"{owner} needs Box actions of shape ({n},) (one value per sample; control_alpha's second "
                         f"block is not supported), got {action_space}")


class PerSamplePolicy(ActorCriticPolicy):
    """SB3's actor-critic with :class:`PerSampleExtractor` and :class:`PerSampleHead` (module docstring).

    :param observation_space: the env's flat observation space (``len(GLOBAL_FEATURES) + N * len(SAMPLE_FEATURES)``).
    :param action_space: ``MultiDiscrete([K] * N)`` or ``Box(-1, 1, (N,))``.
    :param lr_schedule: SB3's learning-rate schedule.
    :param hidden: width of the per-sample latent.
    :param kwargs: the rest of :class:`~stable_baselines3.common.policies.ActorCriticPolicy`'s options
        (``net_arch`` is not used).
    :raises ValueError: an observation or action space that is not per sample.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Any,
                 hidden: int = 64, **kwargs: Any) -> None:
        n = _samples_in(observation_space)
        if isinstance(action_space, spaces.MultiDiscrete):
            if action_space.nvec.shape != (n,) or len(set(action_space.nvec.tolist())) != 1:
                raise ValueError(f"PerSamplePolicy needs MultiDiscrete([K] * {n}) (one choice per sample), got "
                                 f"{action_space}")
        elif isinstance(action_space, spaces.Box):
            _check_box(action_space, n, "PerSamplePolicy")
        else:
            raise ValueError(f"PerSamplePolicy needs per-sample MultiDiscrete or Box actions, got {action_space}")
        self.n_samples, self.hidden = n, int(hidden)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = PerSampleExtractor(self.n_samples, self.hidden)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        if isinstance(self.action_space, spaces.MultiDiscrete):
            self.action_net = PerSampleHead(self.hidden, int(self.action_space.nvec[0]))
        else:
            self.action_net = PerSampleHead(self.hidden, 1)
            self.log_std = nn.Parameter(torch.full((1,), float(self.log_std_init)))  # one value, all positions
        if self.ortho_init:
            self.action_net.apply(lambda m: self.init_weights(m, gain=0.01))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "hidden": self.hidden}


class _PerSampleLatent(nn.Module):
    """``(B, obs)`` to ``(B, N * hidden)``: the shared per-sample network of :class:`PerSampleExtractor`."""

    def __init__(self, n_samples: int, hidden: int) -> None:
        super().__init__()
        self.extractor = PerSampleExtractor(n_samples, hidden)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.extractor.forward_actor(obs)


class PerSampleQ(nn.Module):
    """One of SAC's Q networks over ``cat([obs, actions])``: each sample's block, the global features and its own
    action through one shared network, mean-pooled, then with the global features to one value ``(B, 1)``."""

    def __init__(self, n_samples: int, hidden: int = 64) -> None:
        super().__init__()
        g, f = len(GLOBAL_FEATURES), len(SAMPLE_FEATURES)
        self.n_samples, self.obs_size = int(n_samples), g + int(n_samples) * f
        self.sample_net = nn.Sequential(nn.Linear(f + g + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(hidden + g, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, obs_actions: torch.Tensor) -> torch.Tensor:
        obs, actions = obs_actions[:, : self.obs_size], obs_actions[:, self.obs_size :]
        glob, samples = split_observation(obs)
        x = torch.cat([samples, glob.unsqueeze(1).expand(-1, self.n_samples, -1), actions.unsqueeze(-1)], dim=-1)
        return self.out(torch.cat([self.sample_net(x).mean(1), glob], dim=-1))


class PerSampleSACPolicy(SACPolicy):
    """SB3's SAC policy with the shared per-sample actor and critics (module docstring).

    :param observation_space: the env's flat per-sample observation space.
    :param action_space: ``Box(-1, 1, (N,))``.
    :param lr_schedule: SB3's learning-rate schedule.
    :param hidden: width of the per-sample latents.
    :param kwargs: the rest of :class:`~stable_baselines3.sac.policies.SACPolicy`'s options (``net_arch`` and gSDE
        are not used; the features extractor must stay the default flattening).
    :raises ValueError: an observation or action space that is not per sample.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Any,
                 hidden: int = 64, **kwargs: Any) -> None:
        n = _samples_in(observation_space)
        _check_box(action_space, n, "PerSampleSACPolicy")
        if kwargs.get("use_sde"):
            raise ValueError("PerSampleSACPolicy does not support gSDE (use_sde=True): its exploration is the shared "
                             "per-sample log standard deviation")
        self.n_samples, self.hidden = n, int(hidden)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_actor(self, features_extractor: Any = None) -> Actor:
        actor = super().make_actor(features_extractor)
        actor.latent_pi = _PerSampleLatent(self.n_samples, self.hidden)
        actor.mu = PerSampleHead(self.hidden, 1)
        actor.log_std = PerSampleHead(self.hidden, 1)
        return actor.to(self.device)

    def make_critic(self, features_extractor: Any = None) -> Any:
        critic = super().make_critic(features_extractor)
        critic.q_networks = [PerSampleQ(self.n_samples, self.hidden) for _ in critic.q_networks]
        for i, q in enumerate(critic.q_networks):  # registered as SB3 does: qf0, qf1, ...
            critic.add_module(f"qf{i}", q)
        return critic.to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "hidden": self.hidden}
