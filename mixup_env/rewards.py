"""Rewards as named objects, chosen by string.

A reward is a function of one :class:`StepRecord` (the numbers one env step produced), never of the env
itself. Register your own with the decorator and select it with ``gymnasium.make(id, reward="name")``::

    from mixup_env import register_reward

    @register_reward("mixed_minus_clean")
    def mixed_minus_clean(record, weight=1.0):
        return record.mixed_loss - weight * record.clean_loss

    env = gymnasium.make("mixup_env/FrequencyMixup-v0", reward="mixed_minus_clean", reward_kwargs={"weight": 0.5})

A registered function receives ``reward_kwargs`` as keyword arguments on every call; a registered class is
instantiated once with ``reward_kwargs`` and then called with the record.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["RewardFn", "StepRecord", "get_reward", "list_rewards", "make_reward", "register_reward"]


@dataclass(frozen=True)
class StepRecord:
    """What one env step measured; every reward is computed from this alone.

    :ivar mixed_loss: mean FR loss on the mixed batch (before the update it caused).
    :ivar clean_loss: mean FR loss of the same model on the same batch unmixed.
    :ivar accuracy: the last evaluated clean identification accuracy (held-out images), in ``[0, 1]``.
    :ivar evaluated: whether ``accuracy`` was measured at this step.
    :ivar k_mean: the mean number of images mixed per sample.
    :ivar step: index of this step in the episode (0-based).
    :ivar episode_steps: number of steps in the episode.
    :ivar num_classes: number of identities (``log(num_classes)`` is the chance-level cross-entropy).
    """

    mixed_loss: float
    clean_loss: float
    accuracy: float
    evaluated: bool
    k_mean: float
    step: int
    episode_steps: int
    num_classes: int


RewardFn = Callable[[StepRecord], float]
_F = TypeVar("_F", bound=Callable[..., Any])
_REWARDS: dict[str, Callable[..., Any]] = {}


def register_reward(name: str, *, overwrite: bool = False) -> Callable[[_F], _F]:
    """Decorator registering a reward function ``f(record, **kwargs) -> float`` or class under ``name``.

    :param name: the name used in ``reward=...``.
    :param overwrite: allow replacing an existing entry (otherwise a clash raises ``ValueError``).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reward name must be a non-empty string, got {name!r}")

    def deco(obj: _F) -> _F:
        if not callable(obj):
            raise TypeError(f"reward {name!r} must be a function or a class, got {type(obj).__name__}")
        if name in _REWARDS and not overwrite and _REWARDS[name] is not obj:
            raise ValueError(f"a reward named {name!r} is already registered; pass overwrite=True to replace it")
        _REWARDS[name] = obj
        return obj

    return deco


def list_rewards() -> list[str]:
    """Names of the registered rewards, sorted."""
    return sorted(_REWARDS)


def get_reward(name: str) -> Callable[..., Any]:
    """The registered function or class for ``name``; an unknown name raises listing the known ones."""
    try:
        return _REWARDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(list_rewards())}") from None


def make_reward(name: str, kwargs: Mapping[str, Any] | None = None) -> RewardFn:
    """Build the callable ``record -> float`` for a registered reward.

    :param name: a registered name (see :func:`list_rewards`).
    :param kwargs: options of the reward (``reward_kwargs``).
    """
    obj = get_reward(name)
    kwargs = dict(kwargs or {})
    try:
        if inspect.isclass(obj):
            return obj(**kwargs)
        inspect.signature(obj).bind(None, **kwargs)
    except TypeError as e:
        raise TypeError(f"reward {name!r} does not accept reward_kwargs {kwargs}: {e}") from None
    return functools.partial(obj, **kwargs) if kwargs else obj


@register_reward("fr_loss")
def fr_loss(record: StepRecord) -> float:
    """The paper's reward (Wang et al., 2024): the FR loss on the mixed batch. High loss = hard to learn
    from = more privacy; the FR network minimises the same loss, so the two are adversaries."""
    return record.mixed_loss
