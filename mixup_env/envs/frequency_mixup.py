"""The frequency-domain MixUp environment: an agent chooses how many faces to mix, an FR network trains on it."""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from fr_models.data import FaceData, load_faces
from fr_models.recipes import FRRecipe, default_recipe, get_recipe
from fr_models.trainer import CheckpointError, FRConfig, FRTrainer, atomic_torch_save, load_checkpoint
from fr_models.training import channel_stats as _channel_stats
from fr_models.training import FlipDraw, calibration_subset, random_shift
from mixup_env.actions import ACTION_CODECS, make_codec
from mixup_env.attacker import OnlineAttacker
from mixup_env.exposure import Exposure, batch_max_weight
from mixup_env.mixing import check_max_weight, label_entropy, mix_batch
from mixup_env.prepared import PreparedFaces, prepare_faces, transform_faces
from mixup_env.rewards import ON_DEMAND, EpisodeStart, Reward, StepRecord, as_reward, reward_label, reward_requires
from mixup_env.transform import ChannelMask, FrequencyMasking, model_card

__all__ = ["ACTION_MODES", "GLOBAL_FEATURES", "SAMPLE_FEATURES", "FrequencyMixupEnv", "split_observation"]

#: The action modes (see the class docstring's Action Space section).
ACTION_MODES: tuple[str, ...] = tuple(ACTION_CODECS)
#: Global observation entries, in order (the first ``len(GLOBAL_FEATURES)`` entries of an observation).
GLOBAL_FEATURES: tuple[str, ...] = (
    "progress",
    "batch_clean_loss",
    "running_clean_loss",
    "running_mixed_loss",
    "observed_accuracy",
    "last_k",
)
#: Per-sample observation entries for each sample of the upcoming batch (sample-major after the global ones).
SAMPLE_FEATURES: tuple[str, ...] = ("loss", "confidence", "margin", "class_frequency", "exposure_max",
                                     "exposure_mean")
_EMA = 0.1  # weight of the newest value in the running losses
_EMPTY = np.zeros(0)
#: the most validation faces the env measures its loss on after each update (a fixed subset of the split)
VALIDATION_FACES = 512
#: The version of :meth:`FrequencyMixupEnv.save_checkpoint`'s format; :meth:`~FrequencyMixupEnv.load_checkpoint`
#: refuses others.
CHECKPOINT_VERSION = 3  # 2: the episode's exposure accounting and the batch's face indices; 3: observed accuracy


def split_observation(obs: Any) -> tuple[Any, Any]:
    """Split observations into their global and per-sample parts (numpy arrays or torch tensors).

    :param obs: ``(..., len(GLOBAL_FEATURES) + N * len(SAMPLE_FEATURES))`` observation(s).
    :return: ``(global, per_sample)`` of shapes ``(..., len(GLOBAL_FEATURES))`` and ``(..., N, len(SAMPLE_FEATURES))``,
        views of the input, of its type.
    """
    if not isinstance(obs, (np.ndarray, torch.Tensor)):
        obs = np.asarray(obs)
    g, f = len(GLOBAL_FEATURES), len(SAMPLE_FEATURES)
    if obs.shape[-1] < g or (obs.shape[-1] - g) % f:
        raise ValueError(f"an observation has {g} + N*{f} entries, got {obs.shape[-1]}")
    return obs[..., :g], obs[..., g:].reshape(*obs.shape[:-1], -1, f)


class FrequencyMixupEnv(gym.Env[np.ndarray, Any]):
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

    Set by ``action_mode`` (``K = len(k_values)``, ``N = batch_size``); each registered id fixes one:

    | action_mode         | id                                            | space                          |
    |---------------------|-----------------------------------------------|--------------------------------|
    | ``batch_discrete``  | ``mixup_env/FrequencyMixup-v0``               | ``Discrete(K)``                |
    | ``sample_discrete`` | ``mixup_env/FrequencyMixupPerSample-v0``      | ``MultiDiscrete([K] * N)``     |
    | ``batch_continuous``| ``mixup_env/FrequencyMixupContinuous-v0``     | ``Box(-1, 1, (1,))`` or ``(2,)``|
    | ``sample_continuous``| ``mixup_env/FrequencyMixupPerSampleContinuous-v0`` | ``Box(-1, 1, (N,))`` or ``(2N,)`` |

    A discrete action ``i`` means ``k = k_values[i]`` (default ``(2, 3, 4, 5, 6)``; ``k = 1``, no mixing, may be
    included for ablations); per-sample actions give each sample of the batch its own ``k``. A continuous value
    ``a`` in ``[-1, 1]`` picks the nearest of ``K`` evenly spaced points, ``k_values[round((a + 1) / 2 * (K - 1))]``.
    With ``control_alpha=True`` a second block of values (one, or one per sample) sets the Dirichlet concentration
    of the mixing weights, log-uniformly in ``alpha_range`` (``-1`` = the lowest, ``+1`` = the highest); with
    ``control_cap=True`` a last block sets each mix's cap on its weights (``+1`` = uncapped, ``-1`` = nearly equal
    weights), so the Box grows to 1, 2 or 3 blocks.
    :meth:`action_for_k` encodes a k (or one per sample) as an action of the env's mode.

    ## Observation Space

    ``Box(0, 1, (6 + 6 * N,), float32)``: six global entries, then six entries for each sample of the
    *upcoming* batch (sample-major; :func:`split_observation` separates them). Losses ``l`` are squashed as
    ``l / (l + log(num_classes))`` (0.5 at the chance-level cross-entropy). The test faces never reach the
    observation: the accuracy observed is measured on the validation split, or, for an env without one, on the
    fixed subset of clean training faces batch-norm statistics are recalibrated on (``info["accuracy"]``, the
    test accuracy, is for reporting; an agent that read it would be tuned on the test set).

    | Index      | Name               | Meaning                                                                    |
    |------------|--------------------|----------------------------------------------------------------------------|
    | 0          | progress           | fraction of the episode's FR updates done                                   |
    | 1          | batch_clean_loss   | current FR model's mean loss on the upcoming batch, unmixed (squashed)     |
    | 2          | running_clean_loss | running mean (EMA 0.1) of the clean batch loss (squashed)                  |
    | 3          | running_mixed_loss | running mean (EMA 0.1) of the mixed batch loss (squashed)                  |
    | 4          | observed_accuracy  | last evaluated clean accuracy on the validation faces (else on the fixed    |
    |            |                    | calibration subset of training faces); never the test faces               |
    | 5          | last_k             | mean k of the last step, scaled to [0, 1] over ``k_values`` (0 at start)   |
    | 6 + 6i     | loss               | sample i's clean loss under the current model (squashed)                   |
    | 7 + 6i     | confidence         | softmax probability of sample i's true identity                            |
    | 8 + 6i     | margin             | (that probability - the largest other one + 1) / 2                         |
    | 9 + 6i     | class_frequency    | training images of sample i's identity / those of the largest identity     |
    | 10 + 6i    | exposure_max       | sample i's face's largest weight in any mix so far this episode (0: none)  |
    | 11 + 6i    | exposure_mean      | its mean weight over the mixes it entered so far (as sample or partner)    |

    ## Rewards

    A registered name, a callable ``record -> value`` or a :class:`mixup_env.rewards.Reward` object (declared
    inputs, a reset at each episode, its value at a step and at a fault step); ``reward="fr_loss"`` by default: the
    mean FR loss on the mixed batch, measured in the forward pass of the update it causes. ``utility_aware``
    minimises the excess loss of mixing under a privacy floor on the mixed loss; ``weighted_sum`` composes
    named terms. ``info`` carries every number a reward may use: ``mixed_loss``, ``clean_loss`` and
    ``clean_loss_after`` (same batch unmixed, before and after the update; ``clean_loss_after`` costs a forward
    pass and is measured, and present, only when the reward uses it or ``measure_all=True``), ``accuracy``,
    ``evaluated``, ``k`` (mean), ``k_per_sample``, ``alpha`` (mean), ``mixed_loss_per_sample``,
    ``label_entropy`` and ``label_entropy_per_sample`` (the soft labels' entropy, the part of the mixed loss no
    model can learn away; ``fr_loss_learnable`` is the mixed loss minus it), ``max_weight_per_sample`` (each batch
    face's largest weight in any of the step's mixes, as the sample or as a partner) and
    ``dominant_weight_per_sample`` (each mix's largest weight), ``step``, ``skipped_updates``, and
    ``reward_terms`` for rewards made of terms. Over the episode, :attr:`exposure` accumulates each training face's
    mixes, weights, largest weight and dominated mixes (:class:`mixup_env.exposure.Exposure`; ``summary()``).

    ## Starting State

    :meth:`reset` starts a fresh FR training run: new weights, a new data order, a new mixing stream, all drawn
    from ``self.np_random``, so ``reset(seed=s)`` followed by the same actions gives the same trajectory on CPU.
    The data set's frequency channels are computed once, at construction, and stored as ``storage`` (float16 by
    default): ``N x C x h x w x 2`` bytes, e.g. 478 MB for all 4324 LFW faces at 64x64 upsampled by 4 (54 maps of
    32x32 each; 957 MB in float32), 22 MB for the 800 built-in synthetic faces (54 maps of 16x16). Computing the DCT of
    each batch on the fly instead would save that memory at about 10 % of a step on the synthetic faces (2.7 ms
    of 26 ms, ``benchmarks/run.py`` section 3); the precomputed set fits this budget on any machine that can
    train the model.

    ## Episode End

    The episode is truncated after ``episode_steps`` FR updates; it never terminates. It is also truncated early
    when training fails: a non-finite FR loss or gradient (the update is refused, so the FR model stays as it was,
    batch-norm statistics included) or non-finite FR weights, which show as a non-finite loss (the FR state saved
    at the last accuracy evaluation, every ``eval_every`` steps and at reset, is restored). That step's reward is the
    reward's ``on_fault`` (``0.0`` unless a :class:`~mixup_env.rewards.Reward` says otherwise) and
    ``info["truncated_reason"]`` says which fault it was; the next :meth:`reset` starts a fresh FR
    model as usual.

    ## Checkpoints

    :meth:`save_checkpoint` writes everything needed to continue an episode (FR weights and optimiser, the data
    order, the upcoming batch, the random streams, the running statistics, the exposure accounting) atomically; :meth:`load_checkpoint`,
    on an env built with the same arguments, continues with the same trajectory on CPU as an uninterrupted run.

    ## Arguments

    ```python
    import gymnasium as gym
    import mixup_env

    env = gym.make("mixup_env/FrequencyMixupPerSample-v0", data="synthetic", k_values=(2, 3, 4, 5, 6),
                   batch_size=64, episode_steps=200, reward="fr_loss")
    ```

    * ``data``: ``"synthetic"``/``None`` (the built-in stand-in), a :class:`~fr_models.data.FaceData`, a ``.npz``
      path, a data set name under ``$MIXUP_ENV_DATA``, or a :class:`~mixup_env.prepared.PreparedFaces` (split and
      transformed already: it brings its own masking, image size and split, and the arguments for those are not
      used).
    * ``fr_config``: the FR model to train (a :class:`fr_models.FRConfig`; default: the recipe's, for the prepared
      channels).
    * ``recipe``: the FR model and training settings (:mod:`fr_models.recipes`), a name or an ``FRRecipe``: default
      ``"real"`` (a ResNet body with a frequency stem, CosFace, warm-up and cosine decay over the episode, faces at
      64x64 upsampled by 4) for real faces and ``"small"`` for the built-in synthetic ones. Every setting below that
      is ``None`` comes from it.
    * ``image_size``: resize faces to this square size; ``None``: the recipe's (64 for ``"real"``, the data's own
      size for ``"small"``).
    * ``upsample``: upsample faces by this factor (1, 2, 4, 8) before the block DCT; ``colour``: ``"grey"``,
      ``"ycbcr"`` or ``"rgb"`` (default: from the data's planes); ``storage``: dtype of the precomputed channels.
    * ``action_mode``: one of :data:`ACTION_MODES`; ``control_alpha``, ``alpha_range``: continuous modes only.
    * ``continuous_rounding``: how a continuous action becomes k: ``"nearest"`` (the nearest of the K points) or
      ``"dither"`` (rounded up or down at random so that the expected index follows the action: a reward that
      changes smoothly with the action; :class:`mixup_env.actions.ContinuousCodec`).
    * ``k_values``: the k chosen by each action; each in ``1..batch_size``.
    * ``batch_size``, ``episode_steps``, ``eval_every`` (evaluate accuracy every n steps and at the end).
    * ``dropped_channels``: channels ``8u+v`` dropped per colour plane (default ``u + v <= 3``).
    * ``dirichlet_alpha``: concentration of the mixing weights (when the action does not set it).
    * ``control_cap``: continuous modes: a last block of the action (one value, or one per sample) sets each mix's
      cap on its weights within what its k allows (``+1``: uncapped; :class:`mixup_env.actions.ContinuousCodec`);
      not with ``max_weight``.
    * ``max_weight``: cap every mixing weight at this value, as InstaHide did (0.65); the excess is handed to the
      mix's other faces (:func:`mixup_env.mixing.cap_weights`). Each k of ``k_values`` must allow it:
      ``1/k < max_weight <= 1`` (``None``: uncapped).
    * ``hflip``: mirror each training face left-right with probability 1/2 (done exactly in the DCT domain).
    * ``max_shift``: shift each training face by up to this many whole blocks (exact in the DCT domain).
    * ``recalibrate_norms``: at each accuracy evaluation, re-estimate the FR model's batch-norm statistics on a
      fixed subset of up to 1024 clean training faces (:meth:`fr_models.FRTrainer.recalibrate_norms`); the
      running statistics of mixed batches misnormalise clean faces (measured on the synthetic faces at k = 6:
      clean accuracy 0.29 without, 0.63 with). The weights are not touched.
    * ``reward``, ``reward_kwargs``: a registered reward name and its options, a reward class and its options, or
      a reward object or callable (no options): see :func:`mixup_env.rewards.as_reward`. Pass rewards defined in
      a script's ``__main__`` as objects or functions: they reach spawned ``SubprocVecEnv`` workers, a name
      registered there does not.
    * ``measure_all``: measure every quantity of ``info`` at every step, also those the reward does not use.
    * ``head`` (``"cosface"``/``"arcface"``/``"softmax"``), ``head_kwargs``, ``backbone`` (``"resnet"``,
      ``"grid"``/``"unblock"``), ``embedding_dim``, ``widths``, ``blocks``, ``lr``, ``weight_decay``,
      ``lr_schedule``: the FR model (see :mod:`fr_models`); the schedule spans one episode.
    * ``test_fraction``, ``split_seed``: the held-out images per identity used for accuracy.
    * ``validation_fraction``: hold this share of each identity's training faces out as a validation split
      (0: none). Rewards that read ``validation_loss`` / ``validation_gain`` (``constrained``) need one: the env
      then measures its loss on up to :data:`VALIDATION_FACES` of them after every update (one forward pass).
    * ``attacker_faces``: public faces (identities the FR model does not train on; a ``FaceData``, a ``.npz`` path
      or a data set name), transformed as the private ones, on which an online data-level attacker is trained
      (:class:`mixup_env.attacker.OnlineAttacker`; ``attacker_kwargs``: its options). Rewards that read
      ``leakage`` (``attack_aware``) need it; the env then scores each batch face's leakage at every step and
      refits the attacker every ``refit_every`` steps on the k chosen since.
    * ``device``: torch device of the FR model and the data (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    ## Version History

    * v0: initial version. The default FR model on real faces became the ``"real"`` recipe (a ResNet on
      upsampled DCT maps) in issue 14, and the synthetic faces' the ``"small"`` recipe; ``recipe="legacy"``
      gives the former model (the id was not bumped: a later issue may). Issue 17 changed the observation: two
      per-sample exposure entries (``6 + 6N`` entries, was ``6 + 4N``), and the accuracy observed comes from the
      validation (or training) faces, no longer the test faces; agents trained before do not load on it.

    ## Example

    >>> import gymnasium as gym
    >>> import mixup_env
    >>> env = gym.make("mixup_env/FrequencyMixupPerSample-v0", batch_size=16, episode_steps=3, recipe="tiny")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((102,), dtype('float32'))
    >>> obs, reward, terminated, truncated, info = env.step(env.unwrapped.action_for_k([2] * 8 + [6] * 8))
    >>> info["k"], terminated, truncated, reward == info["mixed_loss"]
    (4.0, False, False, True)
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        data: str | os.PathLike[str] | FaceData | PreparedFaces | None = None,
        image_size: int | None = None,
        action_mode: str = "batch_discrete",
        k_values: Sequence[int] = (2, 3, 4, 5, 6),
        control_alpha: bool = False,
        alpha_range: tuple[float, float] = (0.1, 10.0),
        batch_size: int = 64,
        episode_steps: int = 200,
        eval_every: int = 50,
        dropped_channels: Sequence[int] | None = None,
        dirichlet_alpha: float = 1.0,
        hflip: bool | None = None,
        reward: str | Reward | Callable[..., Any] = "fr_loss",
        reward_kwargs: Mapping[str, Any] | None = None,
        measure_all: bool = False,
        head: str | None = None,
        head_kwargs: Mapping[str, float] | None = None,
        backbone: str | None = None,
        embedding_dim: int | None = None,
        widths: Sequence[int] | None = None,
        lr: float | None = None,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        device: str | torch.device = "cpu",
        recipe: str | FRRecipe | None = None,
        upsample: int | None = None,
        colour: str | None = None,
        storage: str = "float16",
        blocks: Sequence[int] | None = None,
        weight_decay: float | None = None,
        lr_schedule: str | None = None,
        max_shift: int | None = None,
        recalibrate_norms: bool = True,
        fr_config: FRConfig | None = None,
        max_weight: float | None = None,
        validation_fraction: float = 0.0,
        continuous_rounding: str = "nearest",
        attacker_faces: str | os.PathLike[str] | FaceData | None = None,
        attacker_kwargs: Mapping[str, Any] | None = None,
        control_cap: bool = False,
    ) -> None:
        super().__init__()
        self.k_values = self._check_k_values(k_values, batch_size)
        self.k_values_sorted = tuple(sorted(self.k_values))
        #: the cap on every mixing weight (``None``: uncapped)
        self.max_weight = None if max_weight is None else check_max_weight(max_weight, self.k_values)
        if control_cap and max_weight is not None:
            raise ValueError(f"max_weight={max_weight} and control_cap=True: choose one, a fixed cap on every mix or "
                             "one the action chooses")
        lo, hi = self._check_schedule(episode_steps, eval_every, dirichlet_alpha, alpha_range)
        #: the action mode's space and its translation to mixing decisions (:mod:`mixup_env.actions`)
        self.codec = make_codec(action_mode, self.k_values, batch_size, dirichlet_alpha, control_alpha, (lo, hi),
                                continuous_rounding, control_cap)
        self.control_cap = bool(control_cap)
        self.action_mode, self.control_alpha, self.alpha_range = action_mode, bool(control_alpha), (lo, hi)
        self.batch_size, self.episode_steps, self.eval_every = int(batch_size), int(episode_steps), int(eval_every)
        self.dirichlet_alpha = float(dirichlet_alpha)
        self.device = self._check_device(device)
        self.reward_fn = as_reward(reward, reward_kwargs)
        self.reward_name = reward_label(reward)
        #: the on-demand quantities measured at every step (see :func:`mixup_env.rewards.reward_requires`)
        self.measured = ON_DEMAND if measure_all else reward_requires(self.reward_fn)

        faces = None if isinstance(data, PreparedFaces) else load_faces(data)
        source = faces.source if faces is not None else data.source  # type: ignore[union-attr]
        base = recipe if isinstance(recipe, FRRecipe) else get_recipe(recipe or default_recipe(source))
        self.recipe = base.replace(
            backbone=backbone, widths=None if widths is None else tuple(int(v) for v in widths),
            blocks=None if blocks is None else tuple(int(v) for v in blocks), embedding_dim=embedding_dim, head=head,
            head_kwargs=None if head_kwargs is None else dict(head_kwargs), upsample=upsample, image_size=image_size,
            lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule, hflip=hflip, max_shift=max_shift)
        self.hflip = bool(self.recipe.hflip)
        self.max_shift = int(self.recipe.max_shift)
        if faces is not None:
            masking = FrequencyMasking(ChannelMask(dropped_channels, planes=faces.planes), self.recipe.upsample, colour)
            data = prepare_faces(faces, masking, self.recipe.image_size, test_fraction, split_seed, self.batch_size,
                                 storage, self.device, validation_fraction=validation_fraction)
        self._use(data)  # type: ignore[arg-type]
        if "validation_loss" in self.measured and self._val_y is None:
            # a reward that declares nothing (or measure_all) gets what this env can measure; one that reads it fails
            if not measure_all and getattr(self.reward_fn, "requires", None) is not None:
                raise ValueError(f"reward {self.reward_name!r} reads validation_loss: build the env with "
                                 "validation_fraction > 0 (a held-out share of each identity's training faces)")
            self.measured = self.measured - {"validation_loss"}
        #: the online data-level attacker of the attack-aware reward (:mod:`mixup_env.attacker`), or ``None``
        self.attacker = self._make_attacker(attacker_faces, attacker_kwargs)
        if "leakage" in self.measured and self.attacker is None:
            if not measure_all and getattr(self.reward_fn, "requires", None) is not None:
                raise ValueError(f"reward {self.reward_name!r} reads leakage, scored by an online attacker trained on "
                                 "public faces only: build the env with attacker_faces=<faces of identities the FR "
                                 "model does not train on> (a FaceData, a .npz path or a data set name)")
            self.measured = self.measured - {"leakage"}
        self.recalibrate_norms = bool(recalibrate_norms)
        self.fr_config = fr_config if fr_config is not None else self.recipe.fr_config(self._train_x.shape[1:],
                                                                                         self.num_classes)
        self._check_fr_config(self.fr_config)
        self.action_space: spaces.Space[Any] = self.codec.space
        obs_size = len(GLOBAL_FEATURES) + self.batch_size * len(SAMPLE_FEATURES)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(obs_size,), dtype=np.float32)
        self._loss_scale = math.log(self.num_classes)
        self.trainer: FRTrainer | None = None
        #: this episode's per-face exposure (:class:`mixup_env.exposure.Exposure`), from :meth:`reset` on
        self.exposure = Exposure(len(self._train_y))

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

    @staticmethod
    def _check_schedule(episode_steps: int, eval_every: int, dirichlet_alpha: float,
                        alpha_range: tuple[float, float]) -> tuple[float, float]:
        for name, value in (("episode_steps", episode_steps), ("eval_every", eval_every)):
            if int(value) < 1:
                raise ValueError(f"{name}={value} is invalid: accepted a positive integer")
        if not dirichlet_alpha > 0:
            raise ValueError(f"dirichlet_alpha={dirichlet_alpha} is invalid: accepted a positive number")
        lo, hi = (float(a) for a in alpha_range)
        if not 0 < lo <= hi:
            raise ValueError(f"alpha_range={tuple(alpha_range)} is invalid: accepted (low, high) with 0 < low <= high")
        return lo, hi

    @staticmethod
    def _check_device(device: str | torch.device) -> torch.device:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device={device!r} is invalid: accepted a torch device such as 'cpu', 'cuda' or "
                             "'cuda:1'") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: torch sees no CUDA device on this machine; use device='cpu'")
        return dev

    def _use(self, data: PreparedFaces) -> None:
        """Take a prepared data set (on this env's device, with at least a batch of training faces)."""
        if data.device.type != self.device.type:
            raise ValueError(f"the prepared faces live on {data.device}, the env on {self.device}: prepare them on "
                             "the env's device")
        if len(data.train_y) < self.batch_size:
            raise ValueError(f"batch_size={self.batch_size} exceeds the {len(data.train_y)} training images of "
                             f"{data.source!r}: accepted batch_size <= {len(data.train_y)}")
        self.data = data
        self.data_source, self.num_classes, self._class_names = data.source, data.num_classes, data.class_names
        self.masking, self._image_size, self._storage = data.masking, data.image_size, data.train_x.dtype
        self._train_x, self._train_y, self._test_x, self._test_y = data.train_x, data.train_y, data.test_x, data.test_y
        self.train_indices, self.test_indices, self._calib_x = data.train_indices, data.test_indices, data.calib_x
        if data.calib_y is None:
            raise ValueError("the prepared faces carry no calib_y (the calibration faces' identities): prepare them "
                             "with mixup_env.prepared.prepare_faces")
        self._calib_y = data.calib_y
        # at most VALIDATION_FACES of the validation split, a fixed subset: measured after every update
        self._val_x = self._val_y = None
        if data.has_validation:
            keep = torch.from_numpy(calibration_subset(len(data.val_y), 0, VALIDATION_FACES)).to(data.val_y.device)
            self._val_x, self._val_y = data.val_x[keep], data.val_y[keep]
        counts = torch.bincount(self._train_y, minlength=self.num_classes).float()
        self._class_frequency = counts / counts.max()
        self._in_mean, self._in_std = _channel_stats(self._train_x)
        self._draw = FlipDraw(self._train_x, self.masking.hflip if self.hflip else None)

    def _make_attacker(self, faces: str | os.PathLike[str] | FaceData | None,
                       kwargs: Mapping[str, Any] | None) -> OnlineAttacker | None:
        """The online attacker on the public ``faces``, transformed as the private ones (``None``: no attacker)."""
        if faces is None:
            if kwargs:
                raise ValueError("attacker_kwargs given without attacker_faces: the attacker trains on public faces")
            return None
        public = load_faces(faces)
        if public.planes != self.masking.mask.planes:
            raise ValueError(f"attacker_faces have {public.planes} colour plane(s), the private faces "
                             f"{self.masking.mask.planes}: accepted public faces of the same kind")
        x = transform_faces(public.images, self.masking, self._image_size[0], torch.float32, self.device)
        return OnlineAttacker(x.cpu(), **dict(kwargs or {}))

    def _check_fr_config(self, config: FRConfig) -> None:
        """Refuse a model that does not read the prepared channels; build one now, not at reset."""
        shape = tuple(self._train_x.shape[1:])
        if (config.in_channels, *config.input_size) != shape or config.num_classes != self.num_classes:
            raise ValueError(f"fr_config reads ({config.in_channels}, {config.input_size[0]}, {config.input_size[1]}) "
                             f"inputs of {config.num_classes} identities; the prepared faces are {shape} of "
                             f"{self.num_classes}")
        FRTrainer(config, "cpu")  # a bad model configuration fails here

    # ------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if options:
            raise ValueError(f"reset(options={dict(options)!r}): this env takes no reset options; every setting is "
                             "an argument of gymnasium.make (or of FrequencyMixupEnv)")
        super().reset(seed=seed)
        seeds = self.np_random.integers(0, 2**63 - 1, size=2)
        # the mixing draws are made on the CPU whatever the device: the same seed mixes alike on CPU and GPU
        self._generator = torch.Generator().manual_seed(int(seeds[0]))
        self.trainer = FRTrainer(self.fr_config, self.device, seed=int(seeds[1]))
        self.trainer.total_updates = self.episode_steps  # the learning-rate schedule spans the episode
        self.trainer.backbone.set_input_stats(self._in_mean, self._in_std)
        self.trainer.card = model_card(self.masking, self._image_size, class_names=self._class_names,
                                       defence="policy", k_values=self.k_values,
                                       dirichlet_alpha=self.dirichlet_alpha, max_weight=self.max_weight)
        self._order = np.empty(0, dtype=np.int64)
        self.exposure = Exposure(len(self._train_y))
        if self.attacker is not None:  # its own stream, derived from the mixing stream's seed
            self._attack_generator = torch.Generator().manual_seed(int(seeds[0]) + 1)
            self._attack_counts = np.zeros(len(self.k_values))
            self._attack_alpha = [0.0, 0]
            self._fit_attacker({k: 1.0 for k in self.k_values}, self.dirichlet_alpha)
        self._step = 0
        self._truncated = ""  # why the episode ended ("done" after its last step), "" while it runs
        self._last_k = 0.0
        self._evaluate()
        self._finite_state = copy.deepcopy(self.trainer.state_dict())  # restored if the weights ever go non-finite
        self._draw_batch()
        self._batch_stats = self.trainer.sample_stats(*self._batch)
        self._running_clean = self._running_mixed = float(self._batch_stats["loss"].mean())
        self._val_loss = self._validation_loss() if "validation_loss" in self.measured else math.nan
        self.reward_fn.reset(EpisodeStart(self.episode_steps, self.num_classes, self.k_values))
        return self._obs(), {"accuracy": self._accuracy, "clean_loss": self._running_clean, "step": 0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.trainer is None:
            raise RuntimeError("call reset() before step()")
        if self._truncated:
            raise RuntimeError(f"the episode was truncated after {self._step} steps"
                               f"{' (' + self._truncated + ')' if self._truncated != 'done' else ''}: call reset() "
                               "before the next step()")
        k, alpha = self.decode_action(action)
        x, y = self._batch
        k_t = torch.from_numpy(k)
        alpha_t = alpha if isinstance(alpha, float) else torch.from_numpy(alpha)
        caps = self.codec.caps(action, k)
        cap = self.max_weight if caps is None else torch.from_numpy(caps)
        mix = mix_batch(x, y, k_t, self.num_classes, alpha_t, self._generator, cap)
        self.exposure.update(self._batch_idx, mix.partners, mix.weights)  # the mix was made: a server saw it
        entropies = label_entropy(mix.soft_labels).cpu().numpy()
        weights = (batch_max_weight(mix.partners, mix.weights).cpu().numpy(),
                   mix.weights.max(1).values.cpu().numpy())
        leakage = self._leakage(x, mix, k, alpha) if "leakage" in self.measured else (_EMPTY, _EMPTY)
        mixed_losses = self.trainer.train_step(mix.inputs, mix.soft_labels)
        if self.trainer.last_fault is not None:  # non-finite weights show up here too, as a non-finite loss
            return self._fault(k, alpha, mixed_losses, entropies, weights, leakage)
        mixed_loss = float(mixed_losses.mean())
        clean_loss = float(self._batch_stats["loss"].mean())
        self._draw_batch()
        if "clean_loss_after" in self.measured:
            # One forward pass serves both: this batch after the update, and the upcoming batch's features.
            stats = self.trainer.sample_stats(torch.cat([x, self._batch[0]]), torch.cat([y, self._batch[1]]))
            n = len(y)
            clean_loss_after = float(stats["loss"][:n].mean())
            self._batch_stats = {name: v[n:] for name, v in stats.items()}
        else:
            self._batch_stats = self.trainer.sample_stats(*self._batch)
            clean_loss_after = math.nan
        validation = (math.nan, math.nan)
        if "validation_loss" in self.measured:
            now = self._validation_loss()
            validation, self._val_loss = (now, self._val_loss - now), now
        self._step += 1
        truncated = self._step >= self.episode_steps
        self._truncated = "done" if truncated else ""
        evaluated = truncated or self._step % self.eval_every == 0
        if evaluated:
            if self.recalibrate_norms:  # batch-norm statistics of clean faces, not of the mixes trained on
                self.trainer.recalibrate_norms(self._calib_x)
            self._evaluate()
            self._finite_state = copy.deepcopy(self.trainer.state_dict())
        record = self._record(k, alpha, mixed_losses, clean_loss, clean_loss_after, evaluated, entropies, weights,
                              validation, leakage)
        info = self._info(record)
        if "clean_loss_after" in self.measured:
            info["clean_loss_after"] = clean_loss_after
        if "validation_loss" in self.measured:
            info["validation_loss"], info["validation_gain"] = validation
        if caps is not None:
            info["cap_per_sample"] = caps
        if "leakage" in self.measured:
            info["leakage_per_sample"], info["leakage_unmixed_per_sample"] = leakage
            info["leakage_prevented"] = record.leakage_prevented
        out = self.reward_fn(record)
        if isinstance(out, Mapping):
            info["reward_terms"] = {name: float(v) for name, v in out.items()}
            reward = float(sum(info["reward_terms"].values()))
        else:
            reward = float(out)
        if math.isfinite(mixed_loss):
            self._running_mixed += _EMA * (mixed_loss - self._running_mixed)
        self._running_clean += _EMA * (clean_loss - self._running_clean)
        self._last_k = record.k_mean
        return self._obs(), reward, False, truncated, info

    def _fault(self, k: np.ndarray, alpha: float | np.ndarray, mixed_losses: torch.Tensor, entropies: np.ndarray,
               weights: tuple[np.ndarray, np.ndarray],
               leakage: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """End the episode after a refused update (non-finite loss or gradient) or non-finite weights."""
        assert self.trainer is not None
        if self.trainer.weights_finite():
            reason = self.trainer.last_fault or "non-finite FR loss"  # the update was refused: nothing to undo
        else:
            reason = "non-finite FR weights"
            self.trainer.load_state_dict(copy.deepcopy(self._finite_state))
            self._batch_stats = self.trainer.sample_stats(*self._batch)
        self._step += 1
        self._truncated = reason
        record = self._record(k, alpha, mixed_losses, float(self._batch_stats["loss"].mean()), math.nan, False,
                              entropies, weights, leakage=leakage)
        info = {"truncated_reason": reason, **self._info(record)}
        return self._obs(), float(self.reward_fn.on_fault(record)), False, True, info

    def _record(self, k: np.ndarray, alpha: float | np.ndarray, mixed_losses: torch.Tensor, clean_loss: float,
                clean_loss_after: float, evaluated: bool, entropies: np.ndarray,
                weights: tuple[np.ndarray, np.ndarray],
                validation: tuple[float, float] = (math.nan, math.nan),
                leakage: tuple[np.ndarray, np.ndarray] | None = None) -> StepRecord:
        """The :class:`StepRecord` of the step just taken (``self._step`` already counts it)."""
        return StepRecord(mixed_loss=float(mixed_losses.mean()), clean_loss=clean_loss, clean_loss_after=clean_loss_after,
                          accuracy=self._accuracy, evaluated=evaluated, k_mean=float(k.mean()),
                          alpha_mean=float(np.mean(alpha)), step=self._step - 1, episode_steps=self.episode_steps,
                          num_classes=self.num_classes, k_values=self.k_values,
                          label_entropy=float(entropies.mean()), validation_loss=validation[0],
                          validation_gain=validation[1], k=k,
                          mixed_losses=mixed_losses.detach().cpu().numpy(), label_entropies=entropies,
                          max_weights=weights[0], dominant_weights=weights[1],
                          leakage=_EMPTY if leakage is None else leakage[0],
                          leakage_unmixed=_EMPTY if leakage is None else leakage[1])

    def _info(self, record: StepRecord) -> dict[str, Any]:
        """A step's ``info``, derived from its record (``clean_loss_after`` and ``reward_terms`` are added where
        they were measured)."""
        assert self.trainer is not None
        return {"mixed_loss": record.mixed_loss, "clean_loss": record.clean_loss, "accuracy": record.accuracy,
                "evaluated": record.evaluated, "k": record.k_mean, "k_per_sample": record.k,
                "alpha": record.alpha_mean, "mixed_loss_per_sample": record.mixed_losses, "step": record.step + 1,
                "label_entropy": record.label_entropy, "label_entropy_per_sample": record.label_entropies,
                "max_weight_per_sample": record.max_weights, "dominant_weight_per_sample": record.dominant_weights,
                "skipped_updates": self.trainer.skipped_updates}

    # ------------------------------------------------------------------------------------------- checkpoints
    def _fingerprint(self) -> dict[str, Any]:
        """The arguments a checkpoint must agree on, in the order mismatches are reported."""
        cfg = {
            "data": self.data_source, "train_images": len(self._train_y), "image_size": self._image_size,
            "batch_size": self.batch_size, "action_mode": self.action_mode, "k_values": list(self.k_values),
            "control_alpha": self.control_alpha, "alpha_range": list(self.alpha_range),
            "dirichlet_alpha": self.dirichlet_alpha, "hflip": self.hflip, "max_shift": self.max_shift,
            "storage": str(self._storage).removeprefix("torch."),
            "recalibrate_norms": self.recalibrate_norms, "episode_steps": self.episode_steps,
            "eval_every": self.eval_every, "dropped_channels": list(self.masking.mask.dropped),
            "reward": self.reward_name, "fr_config": self.fr_config.__dict__, "max_weight": self.max_weight,
            "validation_faces": 0 if self._val_y is None else len(self._val_y),
            "continuous_rounding": getattr(self.codec, "rounding", "nearest"), "control_cap": self.control_cap,
            "attacker": None if self.attacker is None else self.attacker.config(),
        }
        return json.loads(json.dumps(cfg, default=list))

    def save_checkpoint(self, path: str | os.PathLike[str]) -> Path:
        """Save the running episode atomically, to continue it with :meth:`load_checkpoint`.

        :param path: the file to write (``weights_only``-loadable: tensors and plain values only).
        :raises RuntimeError: no episode yet (call :meth:`reset` first).
        """
        if self.trainer is None:
            raise RuntimeError("no episode to save: call reset() first")
        state = {
            "kind": "mixup_env.FrequencyMixupEnv", "version": CHECKPOINT_VERSION, "config": self._fingerprint(),
            "trainer": self.trainer.state_dict(), "finite_trainer": self._finite_state,
            "np_random": json.dumps(self.np_random.bit_generator.state),
            "np_random_seed": -1 if getattr(self, "_np_random_seed", None) is None else int(self._np_random_seed),
            "generator": self._generator.get_state(), "order": torch.from_numpy(self._order.copy()),
            "batch": [t.cpu() for t in self._batch], "batch_idx": self._batch_idx.clone(),
            "exposure": self.exposure.state_dict(), "val_loss": self._val_loss,
            "batch_stats": {name: v.cpu() for name, v in self._batch_stats.items()},
            "step": self._step, "last_k": self._last_k, "accuracy": self._accuracy,
            "observed_accuracy": self._observed_accuracy,
            "running_clean": self._running_clean, "running_mixed": self._running_mixed,
        }
        if self.attacker is not None:
            state["attacker"] = {**self.attacker.state_dict(), "generator": self._attack_generator.get_state(),
                                 "counts": torch.from_numpy(self._attack_counts.copy()),
                                 "alpha": list(self._attack_alpha)}
        return atomic_torch_save(state, path)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Continue the episode saved by :meth:`save_checkpoint` (on an env built with the same arguments).

        :param path: the checkpoint; loaded with ``torch.load(weights_only=True)``.
        :return: the observation at the point of the save.
        :raises FileNotFoundError: no such file.
        :raises CheckpointError: a truncated, foreign or unsafe file, one written by another kind of object, or by
            another checkpoint version (:data:`CHECKPOINT_VERSION`).
        :raises ValueError: the checkpoint was saved by an env with other arguments (the first one differing is
            named).
        """
        state = load_checkpoint(path, "mixup_env checkpoint", ("kind", "config", "trainer"), self.device)
        if state["kind"] != "mixup_env.FrequencyMixupEnv":
            raise CheckpointError(f"{os.fspath(path)!r} is not a mixup_env checkpoint (its kind is {state['kind']!r})")
        if state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"{os.fspath(path)!r} is a version {state.get('version')!r} env checkpoint; this "
                                  f"mixup_env reads version {CHECKPOINT_VERSION} only: continue it with the mixup_env "
                                  "that wrote it")
        mine = self._fingerprint()
        for key, value in state["config"].items():
            if mine.get(key) != value:
                raise ValueError(f"{os.fspath(path)!r} was saved by an env configured differently: {key} {value} "
                                 f"there, {mine.get(key)} here; build the env with the same arguments")
        self.trainer = FRTrainer.from_state_dict(state["trainer"], self.device)
        self._finite_state = state["finite_trainer"]
        self.np_random = np.random.Generator(np.random.PCG64())
        self.np_random.bit_generator.state = json.loads(state["np_random"])
        if state["np_random_seed"] >= 0:
            self._np_random_seed = state["np_random_seed"]
        self._generator = torch.Generator().manual_seed(0)
        self._generator.set_state(state["generator"])
        self._order = state["order"].numpy().copy()
        self._batch = tuple(t.to(self.device) for t in state["batch"])  # type: ignore[assignment]
        self._batch_idx = state["batch_idx"].clone()
        self.exposure = Exposure(len(self._train_y))
        self.exposure.load_state_dict(state["exposure"])
        self._val_loss = float(state["val_loss"])
        self._batch_stats = {name: v.to(self.device) for name, v in state["batch_stats"].items()}
        self._step, self._last_k = int(state["step"]), float(state["last_k"])
        self._truncated = "done" if self._step >= self.episode_steps else ""
        self._accuracy = float(state["accuracy"])
        self._observed_accuracy = float(state["observed_accuracy"])
        self._running_clean, self._running_mixed = float(state["running_clean"]), float(state["running_mixed"])
        if self.attacker is not None:
            self.attacker.load_state_dict(state["attacker"])
            self._attack_generator = torch.Generator().manual_seed(0)
            self._attack_generator.set_state(state["attacker"]["generator"])
            self._attack_counts = state["attacker"]["counts"].numpy().copy()
            self._attack_alpha = [float(state["attacker"]["alpha"][0]), int(state["attacker"]["alpha"][1])]
        return self._obs()

    # ------------------------------------------------------------------------------------------- actions
    def decode_action(self, action: Any) -> tuple[np.ndarray, float | np.ndarray]:
        """Check an action and turn it into ``(k per sample (N,), alpha)`` (alpha: a float, or ``(N,)``): see
        :meth:`mixup_env.actions.ActionCodec.decode`.

        :raises ValueError: the action is not in the action space; the message says what is accepted.
        """
        return self.codec.decode(action, self.np_random)

    def action_for_k(self, k: int | Sequence[int], alpha: float | None = None) -> Any:
        """Encode a k (or one k per sample) as an action of this env's mode (:meth:`~mixup_env.actions.ActionCodec.encode`).

        :param k: a member of ``k_values``, or ``batch_size`` of them (per-sample modes only).
        :param alpha: the concentration to request (``control_alpha`` envs; default ``dirichlet_alpha``).
        """
        return self.codec.encode(k, alpha)

    # ------------------------------------------------------------------------------------------- helpers
    def _draw_batch(self) -> None:
        """Draw the next training batch (an epoch-wise shuffle from ``np_random``; random mirroring if ``hflip``)."""
        if len(self._order) < self.batch_size:
            self._order = self.np_random.permutation(len(self._train_y))
        self._batch_idx = torch.from_numpy(self._order[: self.batch_size].copy())  # the faces, for exposure
        idx = self._batch_idx.to(self.device)
        self._order = self._order[self.batch_size :]
        x = self._draw(idx, self.np_random)  # mirrored at random if hflip, exactly, in the frequency domain
        x = random_shift(x, self.max_shift, self.np_random)  # whole blocks: exact in the frequency domain
        self._batch = (x, self._train_y[idx])

    def _fit_attacker(self, k_probs: Mapping[int, float], alpha: float) -> None:
        assert self.attacker is not None
        self.attacker.fit(k_probs, alpha, self.max_weight, self._attack_generator)

    def _leakage(self, x: torch.Tensor, mix: Any, k: np.ndarray, alpha: float | np.ndarray) -> tuple[np.ndarray,
                                                                                                    np.ndarray]:
        """Score the step's mixes with the online attacker; refit it every ``refit_every`` steps on the k and
        concentrations chosen since the last fit (the server knows the scheme in use)."""
        assert self.attacker is not None
        leak, unmixed = self.attacker.leakage(x, mix.inputs, mix.partners, mix.weights)
        self.exposure.record_leakage(self._batch_idx, leak)
        self._attack_counts += np.bincount(np.searchsorted(self.k_values_sorted, k), minlength=len(self.k_values))
        self._attack_alpha = [self._attack_alpha[0] + float(np.mean(alpha)), self._attack_alpha[1] + 1]
        if (self._step + 1) % self.attacker.refit_every == 0:
            counts, (total, n) = self._attack_counts, self._attack_alpha
            self._fit_attacker({k: float(c) for k, c in zip(self.k_values_sorted, counts) if c > 0}, total / n)
            self._attack_counts, self._attack_alpha = np.zeros(len(self.k_values)), [0.0, 0]
        return leak.numpy(), unmixed.numpy()

    def _evaluate(self) -> None:
        """Measure the test accuracy (reported in ``info``) and the observed one (validation faces, else the
        calibration subset of training faces: never the test faces)."""
        assert self.trainer is not None
        self._accuracy = self.trainer.accuracy(self._test_x, self._test_y)
        if self._val_y is not None:
            self._observed_accuracy = self.trainer.accuracy(self._val_x, self._val_y)
        else:
            self._observed_accuracy = self.trainer.accuracy(self._calib_x, self._calib_y)

    @torch.no_grad()
    def _validation_loss(self) -> float:
        """The FR model's mean loss on the validation faces (evaluation mode)."""
        assert self.trainer is not None and self._val_x is not None and self._val_y is not None
        return float(self.trainer.sample_stats(self._val_x, self._val_y)["loss"].float().mean())

    def _squash(self, loss: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(loss, dtype=torch.float32)
        t = torch.nan_to_num(t, nan=0.0, posinf=1e30).clamp_min(0.0)
        return t / (t + self._loss_scale)

    def _obs(self) -> np.ndarray:
        k_lo, k_hi = min(self.k_values), max(self.k_values)
        last_k = 0.0 if self._last_k == 0 or k_hi == k_lo else (self._last_k - k_lo) / (k_hi - k_lo)
        stats = {name: v.cpu() for name, v in self._batch_stats.items()}  # the observation is built on the CPU
        faces = self._batch_idx.cpu()
        glob = torch.stack(
            [
                torch.tensor(self._step / self.episode_steps),
                self._squash(stats["loss"].mean()),
                self._squash(self._running_clean),
                self._squash(self._running_mixed),
                torch.tensor(self._observed_accuracy),
                torch.tensor(last_k),
            ]
        ).float()
        per_sample = torch.stack(
            [
                self._squash(stats["loss"]),
                stats["confidence"].float(),
                ((stats["margin"].float() + 1.0) / 2.0),
                self._class_frequency[self._batch[1]].cpu(),
                self.exposure.max_weight[faces].float(),
                (self.exposure.weight_sum[faces] / self.exposure.mixes[faces].clamp_min(1)).float(),
            ],
            dim=1,
        )
        obs = torch.cat([glob, per_sample.reshape(-1)]).clamp_(0.0, 1.0)
        return obs.numpy().astype(np.float32, copy=False)

    def save_fr_model(self, path: str | os.PathLike[str]) -> Path:
        """Save the current FR model (atomically; load with :meth:`fr_models.FRTrainer.load`)."""
        if self.trainer is None:
            raise RuntimeError("no FR model yet: call reset() first")
        return self.trainer.save(path)
