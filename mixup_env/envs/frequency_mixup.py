"""The frequency-domain MixUp environment: an agent chooses how many faces to mix, an FR network trains on it."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from fr_models.data import FaceData, images_to_tensor, load_faces, split_per_identity
from fr_models.trainer import FRConfig, FRTrainer
from mixup_env.mixing import mix_batch
from mixup_env.rewards import StepRecord, make_reward
from mixup_env.transform import ChannelMask, FrequencyMasking

__all__ = ["FrequencyMixupEnv", "OBS_NAMES"]

#: Names of the observation entries, in order (see the class docstring's Observation Space table).
OBS_NAMES: tuple[str, ...] = (
    "progress",
    "batch_clean_loss",
    "running_clean_loss",
    "running_mixed_loss",
    "accuracy",
    "last_k",
)
_EMA = 0.1  # weight of the newest value in the running losses


class FrequencyMixupEnv(gym.Env[np.ndarray, np.int64]):
    """
    ## Description

    Adaptive hybrid masking (Wang et al., 2024) as a training game. Faces are moved to the frequency domain
    (8x8 block DCT, same-frequency coefficients gathered into channels) and the DC and low-frequency channels
    are dropped (the PPFR-FD masking). A face-recognition (FR) network is trained on these masked channels,
    one mini-batch per step, and every training sample is a MixUp of ``k`` masked faces with soft labels.
    The agent plays the paper's strategy network: it chooses ``k``. Mixing more faces hides each face better
    (privacy) and makes the FR network's job harder (accuracy); the default reward is the FR loss on the
    mixed batch, which the strategy wants high while the FR network, trained inside :meth:`step`, wants it low.

    ## Action Space

    ``Discrete(len(k_values))``: action ``i`` mixes every sample of the next batch with ``k_values[i] - 1``
    partners from the same batch (default ``k_values = (2, 3, 4, 5, 6)``, so action 0 is ``k=2`` and 4 is
    ``k=6``). ``k = 1`` (no mixing) may be included for ablations.

    ## Observation Space

    ``Box(0, 1, (6,), float32)``. Losses ``l`` are squashed as ``l / (l + log(num_classes))`` (0.5 at the
    chance-level cross-entropy).

    | Num | Name                 | Meaning                                                                    |
    |-----|----------------------|----------------------------------------------------------------------------|
    | 0   | progress             | fraction of the episode's FR updates done                                   |
    | 1   | batch_clean_loss     | current FR model's mean loss on the *upcoming* batch, unmixed (squashed)   |
    | 2   | running_clean_loss   | running mean (EMA 0.1) of the clean batch loss (squashed)                  |
    | 3   | running_mixed_loss   | running mean (EMA 0.1) of the mixed batch loss (squashed)                  |
    | 4   | accuracy             | last evaluated clean identification accuracy on held-out images            |
    | 5   | last_k               | last k chosen, scaled to [0, 1] over ``k_values`` (0 before the first step) |

    ## Rewards

    Chosen by name from the reward registry (:mod:`mixup_env.rewards`), ``reward="fr_loss"`` by default: the
    mean FR loss on the mixed batch, measured in the forward pass of the update it causes. ``info`` carries
    every number a reward may use: ``mixed_loss``, ``clean_loss`` (same model, same batch, unmixed),
    ``accuracy``, ``evaluated``, ``k``, ``step``, ``skipped_updates``.

    ## Starting State

    :meth:`reset` starts a fresh FR training run: new weights, a new data order, a new mixing stream, all drawn
    from ``self.np_random``, so ``reset(seed=s)`` followed by the same actions gives the same trajectory on CPU.
    The data set's frequency channels are computed once, at construction.

    ## Episode End

    The episode is truncated after ``episode_steps`` FR updates; it never terminates.

    ## Arguments

    ```python
    import gymnasium as gym
    import mixup_env

    env = gym.make("mixup_env/FrequencyMixup-v0", data="synthetic", k_values=(2, 3, 4, 5, 6), batch_size=64,
                   episode_steps=200, reward="fr_loss")
    ```

    * ``data``: ``"synthetic"``/``None`` (the built-in stand-in), a :class:`~fr_models.data.FaceData`, a ``.npz``
      path, or a data set name under ``$MIXUP_ENV_DATA``.
    * ``image_size``: resize faces to this square size (a multiple of 8); ``None`` keeps their size.
    * ``k_values``: the k chosen by each action; each in ``1..batch_size``.
    * ``batch_size``, ``episode_steps``, ``eval_every`` (evaluate accuracy every n steps and at the end).
    * ``dropped_channels``: channels ``8u+v`` dropped per colour plane (default ``u + v <= 3``).
    * ``dirichlet_alpha``: concentration of the mixing weights.
    * ``reward``, ``reward_kwargs``: a registered reward and its options.
    * ``head`` (``"softmax"``/``"arcface"``), ``head_kwargs``, ``backbone`` (``"grid"``/``"unblock"``),
      ``embedding_dim``, ``widths``, ``lr``: the FR model (see :mod:`fr_models`).
    * ``test_fraction``, ``split_seed``: the held-out images per identity used for accuracy.
    * ``device``: torch device of the FR model and the data.

    ## Version History

    * v0: initial version.

    ## Example

    >>> import gymnasium as gym
    >>> import mixup_env
    >>> env = gym.make("mixup_env/FrequencyMixup-v0", batch_size=16, episode_steps=3, widths=(8, 16))
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((6,), dtype('float32'))
    >>> obs, reward, terminated, truncated, info = env.step(4)
    >>> info["k"], terminated, truncated, reward == info["mixed_loss"]
    (6.0, False, False, True)
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        data: str | os.PathLike[str] | FaceData | None = None,
        image_size: int | None = None,
        k_values: Sequence[int] = (2, 3, 4, 5, 6),
        batch_size: int = 64,
        episode_steps: int = 200,
        eval_every: int = 50,
        dropped_channels: Sequence[int] | None = None,
        dirichlet_alpha: float = 1.0,
        reward: str = "fr_loss",
        reward_kwargs: Mapping[str, Any] | None = None,
        head: str = "softmax",
        head_kwargs: Mapping[str, float] | None = None,
        backbone: str = "grid",
        embedding_dim: int = 128,
        widths: Sequence[int] | None = None,
        lr: float = 1e-3,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self.k_values = self._check_k_values(k_values, batch_size)
        for name, value in (("episode_steps", episode_steps), ("eval_every", eval_every)):
            if int(value) < 1:
                raise ValueError(f"{name}={value} is invalid: accepted a positive integer")
        if not dirichlet_alpha > 0:
            raise ValueError(f"dirichlet_alpha={dirichlet_alpha} is invalid: accepted a positive number")
        self.batch_size = int(batch_size)
        self.episode_steps = int(episode_steps)
        self.eval_every = int(eval_every)
        self.dirichlet_alpha = float(dirichlet_alpha)
        self.device = torch.device(device)
        self.reward_name = reward
        self.reward_fn = make_reward(reward, reward_kwargs)

        faces = load_faces(data)
        self.data_source = faces.source
        h, w = faces.image_shape
        if image_size is None and (h % 8 or w % 8):
            raise ValueError(
                f"image size {h}x{w} of {faces.source!r} is not a multiple of 8: the 8x8 block DCT needs both sides "
                f"to be multiples of 8; pass image_size=<a multiple of 8> (e.g. 64 or 112) to resize"
            )
        self.num_classes = faces.num_classes
        self.masking = FrequencyMasking(ChannelMask(dropped_channels, planes=faces.planes)).to(self.device)
        train_idx, test_idx = split_per_identity(faces.labels, test_fraction, split_seed)
        if len(train_idx) < self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} exceeds the {len(train_idx)} training images of {faces.source!r}: "
                f"accepted batch_size <= {len(train_idx)}"
            )
        if len(test_idx) == 0:
            raise ValueError(f"{faces.source!r} has no identity with 2+ images: nothing to evaluate accuracy on")
        freq = self._precompute(faces, image_size)
        labels = torch.from_numpy(faces.labels).to(self.device)
        self._train_x, self._train_y = freq[train_idx], labels[train_idx]
        self._test_x, self._test_y = freq[test_idx], labels[test_idx]
        self.train_indices, self.test_indices = train_idx, test_idx
        self._in_mean = self._train_x.mean(dim=(0, 2, 3))
        self._in_std = self._train_x.std(dim=(0, 2, 3))
        self.fr_config = FRConfig(
            in_channels=int(freq.shape[1]),
            input_size=(int(freq.shape[2]), int(freq.shape[3])),
            num_classes=self.num_classes,
            embedding_dim=int(embedding_dim),
            backbone=backbone,
            widths=None if widths is None else tuple(int(w) for w in widths),
            head=head,
            head_kwargs=dict(head_kwargs or {}),
            lr=float(lr),
        )
        FRTrainer(self.fr_config, "cpu")  # fail now, not at reset, on a bad model configuration

        self.action_space = spaces.Discrete(len(self.k_values))
        self.observation_space = spaces.Box(0.0, 1.0, shape=(len(OBS_NAMES),), dtype=np.float32)
        self._loss_scale = math.log(self.num_classes)
        self.trainer: FRTrainer | None = None

    # ----------------------------------------------------------------------------------------------- setup
    @staticmethod
    def _check_k_values(k_values: Sequence[int], batch_size: int) -> tuple[int, ...]:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size} is invalid: accepted a positive integer")
        ks = tuple(int(k) for k in k_values)
        if not ks or len(set(ks)) != len(ks) or any(k != kv for k, kv in zip(ks, k_values)):
            raise ValueError(f"k_values={tuple(k_values)} is invalid: accepted a non-empty sequence of distinct integers")
        bad = [k for k in ks if not 1 <= k <= int(batch_size)]
        if bad:
            raise ValueError(
                f"k_values {bad} cannot be mixed within a batch of {batch_size} images: "
                f"accepted k in 1..batch_size (k distinct images per mix; 1 = unmixed)"
            )
        return ks

    def _precompute(self, faces: FaceData, image_size: int | None, chunk: int = 512) -> torch.Tensor:
        """Masked frequency channels of the whole data set, computed once."""
        out = []
        with torch.no_grad():
            for i in range(0, len(faces.images), chunk):
                x = images_to_tensor(faces.images[i : i + chunk], image_size).to(self.device)
                out.append(self.masking(x))
        return torch.cat(out)

    # ------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        seeds = self.np_random.integers(0, 2**63 - 1, size=2)
        self._generator = torch.Generator(device=self.device).manual_seed(int(seeds[0]))
        self.trainer = FRTrainer(self.fr_config, self.device, seed=int(seeds[1]))
        self.trainer.backbone.set_input_stats(self._in_mean, self._in_std)
        self._order = np.empty(0, dtype=np.int64)
        self._step = 0
        self._last_k = 0.0
        self._accuracy = self.trainer.accuracy(self._test_x, self._test_y)
        self._next_batch()
        self._running_clean = self._batch_clean_loss
        self._running_mixed = self._batch_clean_loss
        return self._obs(), {"accuracy": self._accuracy, "clean_loss": self._batch_clean_loss, "step": 0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.trainer is None:
            raise RuntimeError("call reset() before step()")
        k = self.k_values[self._check_action(action)]
        x, y = self._batch
        mix = mix_batch(x, y, k, self.num_classes, self.dirichlet_alpha, self._generator)
        mixed_loss = float(self.trainer.train_step(mix.inputs, mix.soft_labels).mean())
        clean_loss = self._batch_clean_loss
        self._step += 1
        truncated = self._step >= self.episode_steps
        evaluated = truncated or self._step % self.eval_every == 0
        if evaluated:
            self._accuracy = self.trainer.accuracy(self._test_x, self._test_y)
        record = StepRecord(
            mixed_loss=mixed_loss,
            clean_loss=clean_loss,
            accuracy=self._accuracy,
            evaluated=evaluated,
            k_mean=float(k),
            step=self._step - 1,
            episode_steps=self.episode_steps,
            num_classes=self.num_classes,
        )
        reward = float(self.reward_fn(record))
        if math.isfinite(mixed_loss):
            self._running_mixed += _EMA * (mixed_loss - self._running_mixed)
        self._running_clean += _EMA * (clean_loss - self._running_clean)
        self._last_k = float(k)
        self._next_batch()
        info = {
            "mixed_loss": mixed_loss,
            "clean_loss": clean_loss,
            "accuracy": self._accuracy,
            "evaluated": evaluated,
            "k": float(k),
            "step": self._step,
            "skipped_updates": self.trainer.skipped_updates,
        }
        return self._obs(), reward, False, truncated, info

    # ------------------------------------------------------------------------------------------- helpers
    def _check_action(self, action: Any) -> int:
        a = np.asarray(action)
        if a.size != 1 or not np.issubdtype(a.dtype, np.integer) or not self.action_space.contains(int(a.reshape(()))):
            raise ValueError(
                f"action {action!r} is outside the action space {self.action_space}: expected an integer in "
                f"0..{len(self.k_values) - 1}, the index of k in k_values={self.k_values}"
            )
        return int(a.reshape(()))

    def _next_batch(self) -> None:
        """Draw the next training batch (an epoch-wise shuffle) and the current model's clean loss on it."""
        if len(self._order) < self.batch_size:
            self._order = self.np_random.permutation(len(self._train_y))
        idx = torch.from_numpy(self._order[: self.batch_size]).to(self.device)
        self._order = self._order[self.batch_size :]
        self._batch = (self._train_x[idx], self._train_y[idx])
        assert self.trainer is not None
        self._batch_clean_loss = float(self.trainer.losses(*self._batch).mean())

    def _squash(self, loss: float) -> float:
        return loss / (loss + self._loss_scale) if math.isfinite(loss) and loss > 0 else float(loss == math.inf)

    def _obs(self) -> np.ndarray:
        k_lo, k_hi = min(self.k_values), max(self.k_values)
        last_k = 0.0 if self._last_k == 0 or k_hi == k_lo else (self._last_k - k_lo) / (k_hi - k_lo)
        return np.array(
            [
                self._step / self.episode_steps,
                self._squash(self._batch_clean_loss),
                self._squash(self._running_clean),
                self._squash(self._running_mixed),
                self._accuracy,
                last_k,
            ],
            dtype=np.float32,
        )

    def save_fr_model(self, path: str | os.PathLike[str]) -> Path:
        """Save the current FR model (atomically; load with :meth:`fr_models.FRTrainer.load`)."""
        if self.trainer is None:
            raise RuntimeError("no FR model yet: call reset() first")
        return self.trainer.save(path)
