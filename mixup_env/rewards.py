"""Rewards: chosen by name, or passed in as a function or a :class:`Reward` object.

A reward is a function of one :class:`StepRecord` (the numbers one env step produced), never of the env
itself. The env takes it in three forms (:func:`as_reward`):

* a registered **name** (``reward="fr_loss"``), with ``reward_kwargs``;
* a **callable** ``record -> value`` (a function, or a ``functools.partial``);
* a :class:`Reward` **object**: declared inputs (``requires``), ``reset(start)`` at each episode (for a reward
  with state), ``__call__(record)`` and ``on_fault(record)`` (the reward of a step whose FR update failed).

A callable or an object travels with the env into spawned ``SubprocVecEnv`` workers (they are pickled with it);
a *name* registered under ``if __name__ == "__main__":`` does not (the worker never ran that block), so pass
such rewards as objects. Register your own with the decorator and select it with
``gymnasium.make(id, reward="name")``::

    from mixup_env import register_reward

    @register_reward("mixed_minus_clean")
    def mixed_minus_clean(record, weight=1.0):
        return record.mixed_loss - weight * record.clean_loss

    env = gymnasium.make("mixup_env/FrequencyMixup-v0", reward="mixed_minus_clean", reward_kwargs={"weight": 0.5})

A registered function receives ``reward_kwargs`` as keyword arguments on every call; a registered class is
instantiated once with ``reward_kwargs`` and then called with the record. A reward returns a number, or a
mapping of named terms: then the reward is their sum and the env reports each term in ``info["reward_terms"]``
(see :class:`WeightedSum`).

Measuring ``clean_loss_after`` costs the env a forward pass per step, so it is measured only for rewards that
use it. A reward says what it uses with ``requires`` (``@register_reward("name", requires=())`` for a function,
a ``requires`` attribute for a class); a reward that says nothing gets every quantity, which is always safe.
A quantity that was not measured is ``nan`` in the record and absent from ``info``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "ON_DEMAND",
    "EpisodeStart",
    "Reward",
    "as_reward",
    "RewardFn",
    "RewardValue",
    "StepRecord",
    "UtilityAware",
    "AttackAware",
    "ConstrainedUtility",
    "WeightedSum",
    "fr_loss_learnable",
    "get_reward",
    "list_rewards",
    "make_reward",
    "record_terms",
    "register_reward",
    "reward_label",
    "reward_requires",
]


@dataclass(frozen=True)
class StepRecord:
    """What one env step measured; every reward is computed from this alone.

    :ivar mixed_loss: mean FR loss on the mixed batch (before the update it caused).
    :ivar clean_loss: mean FR loss of the same model on the same batch unmixed (before the update).
    :ivar clean_loss_after: mean FR loss on the same clean batch right after the update (``nan`` when the reward
        does not use it: see :func:`reward_requires`).
    :ivar accuracy: the last evaluated clean identification accuracy (held-out images), in ``[0, 1]``.
    :ivar evaluated: whether ``accuracy`` was measured at this step.
    :ivar k_mean: the mean number of images mixed per sample.
    :ivar alpha_mean: the mean Dirichlet concentration of the mixing weights.
    :ivar step: index of this step in the episode (0-based).
    :ivar episode_steps: number of steps in the episode.
    :ivar num_classes: number of identities (``log(num_classes)`` is the chance-level cross-entropy).
    :ivar k_values: the k the env can choose from.
    :ivar validation_loss: mean FR loss on the env's validation split right after the update (``nan`` when not
        measured: an on-demand quantity, and only envs with ``validation_fraction > 0`` have the split).
    :ivar validation_gain: how much this step's update lowered the validation loss (the previous step's, or the
        fresh model's, minus this one): held-out utility, never the batch trained on, never the test faces.
    :ivar label_entropy: mean entropy of the mixed batch's soft labels in nats (:func:`mixup_env.mixing.label_entropy`;
        the part of ``mixed_loss`` no model can learn away; ``nan`` where not given).
    :ivar k: ``(N,)`` images mixed into each sample.
    :ivar mixed_losses: ``(N,)`` per-sample FR losses on the mixed batch.
    :ivar label_entropies: ``(N,)`` per-sample entropies of the soft labels.
    :ivar max_weights: ``(N,)`` each batch face's largest weight in any of the step's mixes, as the sample or a
        partner (:func:`mixup_env.exposure.batch_max_weight`).
    :ivar dominant_weights: ``(N,)`` each mix's largest weight.
    :ivar leakage: ``(N,)`` each batch face's leakage to the env's online data-level attacker through the step's
        mixes (:meth:`mixup_env.attacker.OnlineAttacker.leakage`: the largest centred cosine between the face and
        the reconstruction of a mix it entered; on demand, for envs with ``attacker_faces``; empty where not
        measured).
    :ivar leakage_unmixed: ``(N,)`` the leakage each face would have had unmixed (masked only).
    """

    mixed_loss: float
    clean_loss: float
    clean_loss_after: float
    accuracy: float
    evaluated: bool
    k_mean: float
    alpha_mean: float
    step: int
    episode_steps: int
    num_classes: int
    k_values: tuple[int, ...] = (2, 3, 4, 5, 6)
    label_entropy: float = math.nan
    validation_loss: float = math.nan
    validation_gain: float = math.nan
    k: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False, compare=False)
    mixed_losses: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    label_entropies: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    max_weights: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    dominant_weights: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    leakage: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    leakage_unmixed: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    @property
    def learnable_loss(self) -> float:
        """``mixed_loss - label_entropy``: the part of the mixed loss a model can lower (``KL(t || p)`` for the
        softmax head; a margin head adds its margin), which grows with k only if the mixes are harder to learn."""
        return self.mixed_loss - self.label_entropy

    @property
    def leakage_prevented(self) -> float:
        """The mean over the batch's faces of ``leakage_unmixed - leakage``: how much of the faces the step's mixing
        kept from the online attacker (``nan`` where leakage was not measured)."""
        if len(self.leakage) == 0:
            return math.nan
        return float(np.mean(self.leakage_unmixed - self.leakage))

    @property
    def learning_progress(self) -> float:
        """How much this step's (mixed) update lowered the clean loss of its own batch: the utility it bought."""
        return self.clean_loss - self.clean_loss_after

    @property
    def k_fraction(self) -> float:
        """``k_mean`` scaled to ``[0, 1]`` over ``k_values`` (0 when there is a single k)."""
        lo, hi = min(self.k_values), max(self.k_values)
        return 0.0 if hi == lo else (self.k_mean - lo) / (hi - lo)


#: What a reward returns: a number, or named terms whose sum is the reward (the env reports them in ``info``).
RewardValue = float | Mapping[str, float]
RewardFn = Callable[[StepRecord], RewardValue]
_F = TypeVar("_F", bound=Callable[..., Any])
_REWARDS: dict[str, Callable[..., Any]] = {}
#: Record quantities that cost the env extra work (a forward pass), measured only for rewards that use them.
ON_DEMAND: frozenset[str] = frozenset({"clean_loss_after", "validation_loss", "leakage"})
# the record's properties, and the fields they are computed from
_DERIVED = {"learning_progress": frozenset({"clean_loss", "clean_loss_after"}), "k_fraction": frozenset({"k_mean"}),
            "learnable_loss": frozenset({"mixed_loss", "label_entropy"}),
            "validation_gain": frozenset({"validation_loss"}), "leakage_prevented": frozenset({"leakage"})}


def _check_requires(requires: Any, owner: str) -> frozenset[str]:
    if isinstance(requires, str) or not all(isinstance(r, str) for r in requires):
        raise TypeError(f"{owner}: requires must be a collection of quantity names, got {requires!r}")
    bad = set(requires) - ON_DEMAND - {f.name for f in fields(StepRecord)} - set(_DERIVED)
    if bad:
        raise ValueError(f"{owner}: requires names unknown quantities {sorted(bad)}; accepted: StepRecord fields "
                         f"and {', '.join(sorted(_DERIVED))}")
    out = set(requires)
    for name, deps in _DERIVED.items():
        if name in out:
            out |= deps
    return frozenset(out)


def register_reward(name: str, *, overwrite: bool = False, requires: Any = None) -> Callable[[_F], _F]:
    """Decorator registering a reward function ``f(record, **kwargs) -> float`` or class under ``name``.

    :param name: the name used in ``reward=...``.
    :param overwrite: allow replacing an existing entry (otherwise a clash raises ``ValueError``).
    :param requires: the record quantities the reward reads, if you want the env to skip measuring the others
        (of :data:`ON_DEMAND`); ``None`` (the default) = everything is measured.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reward name must be a non-empty string, got {name!r}")
    needs = None if requires is None else _check_requires(requires, f"reward {name!r}")

    def deco(obj: _F) -> _F:
        if not callable(obj):
            raise TypeError(f"reward {name!r} must be a function or a class, got {type(obj).__name__}")
        if name in _REWARDS and not overwrite and _REWARDS[name] is not obj:
            raise ValueError(f"a reward named {name!r} is already registered; pass overwrite=True to replace it")
        if needs is not None:
            obj.requires = needs  # type: ignore[attr-defined]
        _REWARDS[name] = obj
        return obj

    return deco


def reward_requires(reward: Callable[..., Any]) -> frozenset[str]:
    """The on-demand quantities (of :data:`ON_DEMAND`) the env must measure for ``reward``.

    Read from the reward's ``requires`` (through ``functools.partial``); a reward without one needs all of them.
    """
    obj = reward.func if isinstance(reward, functools.partial) else reward
    requires = getattr(obj, "requires", None)
    if requires is None:
        return ON_DEMAND
    return _check_requires(requires, f"reward {obj!r}") & ON_DEMAND


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


@register_reward("fr_loss", requires=("mixed_loss",))
def fr_loss(record: StepRecord) -> float:
    """The paper's reward (Wang et al., 2024): the FR loss on the mixed batch. High loss = hard to learn
    from = more privacy; the FR network minimises the same loss, so the two are adversaries."""
    return record.mixed_loss


@register_reward("fr_loss_learnable", requires=("learnable_loss",))
def fr_loss_learnable(record: StepRecord) -> float:
    """The paper's reward made honest: the mixed-batch FR loss minus its soft labels' entropy
    (:attr:`StepRecord.learnable_loss`).

    The soft-label cross-entropy is ``H(t) + KL(t || p)``; with Dirichlet(1) weights ``E[H(t)]`` alone is 0.50,
    0.83, 1.08, 1.28, 1.45 nats for k = 2..6, so ``fr_loss`` grows with k even when the mixes are no harder to
    learn, and "always the largest k" maximises it. This reward pays only for the loss a model could have
    lowered: a larger k scores higher only if the FR network finds its mixes harder to fit."""
    return record.learnable_loss


@dataclass(frozen=True)
class EpisodeStart:
    """What a reward is told when an episode starts (:meth:`Reward.reset`).

    :ivar episode_steps: steps in the episode.
    :ivar num_classes: identities of the FR task (``log(num_classes)`` is the chance-level cross-entropy).
    :ivar k_values: the k the env can choose from.
    """

    episode_steps: int
    num_classes: int
    k_values: tuple[int, ...]


class Reward:
    """A reward as an object (after CompilerGym's ``Reward``): what it reads, a reset at each episode, its value at a
    step and at a fault step. Subclass it and define :meth:`__call__`; the rest is optional::

        class Improvement(Reward):
            requires = frozenset({"mixed_loss"})

            def reset(self, start):
                self.last = None

            def __call__(self, record):
                out = 0.0 if self.last is None else record.mixed_loss - self.last
                self.last = record.mixed_loss
                return out

    :ivar requires: the :class:`StepRecord` quantities it reads (``None``: all; see :func:`reward_requires`).
    """

    requires: frozenset[str] | None = None

    def reset(self, start: EpisodeStart) -> None:
        """Called by the env's ``reset``, before the episode's first step (default: nothing)."""

    def __call__(self, record: StepRecord) -> RewardValue:
        """The reward of one step: a number, or named terms whose sum is the reward."""
        raise NotImplementedError(f"{type(self).__name__} must define __call__(record)")

    def on_fault(self, record: StepRecord) -> float:
        """The reward of a step whose FR update was refused (a non-finite loss or gradient, or non-finite weights;
        the episode ends there). ``record.mixed_loss`` may be ``nan``. Default: ``0.0``."""
        return 0.0


class _CallableReward(Reward):
    """A function ``record -> value`` (or a registered reward's instance) as a :class:`Reward`; its ``requires``,
    ``reset`` and ``on_fault`` are used when it has them."""

    def __init__(self, fn: Callable[[StepRecord], RewardValue]) -> None:
        self.fn = fn
        obj = fn.func if isinstance(fn, functools.partial) else fn
        self.requires = getattr(obj, "requires", None)

    def reset(self, start: EpisodeStart) -> None:
        if callable(getattr(self.fn, "reset", None)):
            self.fn.reset(start)  # type: ignore[attr-defined]

    def __call__(self, record: StepRecord) -> RewardValue:
        return self.fn(record)

    def on_fault(self, record: StepRecord) -> float:
        hook = getattr(self.fn, "on_fault", None)
        return float(hook(record)) if callable(hook) else 0.0

    def __repr__(self) -> str:
        return f"Reward({self.fn!r})"


def as_reward(reward: str | Reward | Callable[..., Any], kwargs: Mapping[str, Any] | None = None) -> Reward:
    """The :class:`Reward` the env uses for ``reward``.

    :param reward: a registered name, a :class:`Reward` object or class, or a callable ``record -> value``.
    :param kwargs: options: for a name (``reward_kwargs``) or a class (its constructor's); none for an object or a
        callable (bind them yourself, e.g. with ``functools.partial``).
    :raises ValueError: an unknown name.
    :raises TypeError: something that is not a reward, or options it cannot take.
    """
    kwargs = dict(kwargs or {})
    if isinstance(reward, str):
        obj = make_reward(reward, kwargs)
    elif inspect.isclass(reward):
        try:
            obj = reward(**kwargs)
        except TypeError as e:
            raise TypeError(f"reward class {reward.__name__} does not accept reward_kwargs {kwargs}: {e}") from None
    elif callable(reward):
        if kwargs:
            raise TypeError(f"reward_kwargs {kwargs} go with a reward name or class; a reward object or function "
                            "takes none (bind options with functools.partial)")
        obj = reward
    else:
        raise TypeError(f"reward must be a registered name, a Reward object or class, or a callable record -> value; "
                        f"got {type(reward).__name__}")
    if isinstance(obj, Reward):
        if obj.requires is not None:
            obj.requires = _check_requires(obj.requires, f"reward {obj!r}")
        return obj
    return _CallableReward(obj)


def reward_label(reward: str | Reward | Callable[..., Any]) -> str:
    """A name for ``reward`` in summaries and checkpoint fingerprints: the registered name, or the qualified name of
    the object's class or the function."""
    if isinstance(reward, str):
        return reward
    obj = reward.fn if isinstance(reward, _CallableReward) else reward
    obj = obj.func if isinstance(obj, functools.partial) else obj
    target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    return f"{target.__module__}.{target.__qualname__}"


def record_terms() -> list[str]:
    """Numeric quantities of a :class:`StepRecord` usable as reward terms (fields and properties)."""
    names = [f.name for f in fields(StepRecord) if f.type in ("float", "int", "bool")]
    return names + ["learning_progress", "k_fraction", "learnable_loss"]


@register_reward("weighted_sum")
class WeightedSum:
    """A weighted sum of named terms; each weighted term is reported in ``info["reward_terms"]``.

    A term is a numeric quantity of the :class:`StepRecord` (``mixed_loss``, ``clean_loss``, ``accuracy``,
    ``learning_progress``, ``k_fraction``, ... see :func:`record_terms`) or the name of another registered reward
    (called with no options)::

        gymnasium.make(env_id, reward="weighted_sum",
                       reward_kwargs={"terms": {"mixed_loss": 1.0, "clean_loss_after": -0.5}})

    :param terms: ``{name: weight}``.
    """

    def __init__(self, terms: Mapping[str, float]) -> None:
        if not isinstance(terms, Mapping) or not terms:
            raise ValueError(f"terms must be a non-empty mapping {{name: weight}}, got {terms!r}")
        known = record_terms()
        self.terms: dict[str, float] = {}
        self._rewards: dict[str, RewardFn] = {}
        for name, weight in terms.items():
            if name in known:
                pass
            elif name in _REWARDS and name != "weighted_sum":
                self._rewards[name] = make_reward(name)
            else:
                raise ValueError(
                    f"unknown reward term {name!r}; accepted: record quantities {', '.join(known)}, "
                    f"or registered rewards {', '.join(r for r in list_rewards() if r != 'weighted_sum')}"
                )
            self.terms[name] = float(weight)
        needs: set[str] = set()
        undeclared = False
        for name in self.terms:
            if name in self._rewards:
                sub = self._rewards[name]
                undeclared |= getattr(sub.func if isinstance(sub, functools.partial) else sub, "requires", None) is None
                needs |= reward_requires(sub)
            else:
                needs |= _check_requires([name], "term")
        #: what the env must measure for these terms (``None``: a term's reward says nothing, so everything)
        self.requires = None if undeclared else frozenset(needs)

    def _value(self, name: str, record: StepRecord) -> float:
        if name in self._rewards:
            out = self._rewards[name](record)
            return float(sum(out.values())) if isinstance(out, Mapping) else float(out)
        return float(getattr(record, name))

    def __call__(self, record: StepRecord) -> dict[str, float]:
        return {name: w * self._value(name, record) for name, w in self.terms.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(terms={self.terms})"


@register_reward("utility_aware")
class UtilityAware:
    """Utility-aware reward: keep the FR model's training signal as close to clean as possible (utility),
    subject to a privacy floor on the mixed-batch loss (a constraint, enforced by a penalty).

    In units of the chance-level loss ``L = log(num_classes)``, with ``m = mixed_loss / L`` and
    ``c = clean_loss / L``::

        reward = -cost * (m - c)  -  penalty * max(0, floor - m)
                 `-- mixing_cost --'   `---- privacy_shortfall ---'

    ``m - c`` is the excess loss that mixing puts on the FR network at this step (0 when nothing is mixed), and
    the hinge demands that the mixed loss stays at least ``floor * L`` (privacy: the mixed batch must stay hard
    to learn from). With ``penalty > cost`` the best action is the *smallest* k whose mixed loss clears the
    floor, which is not the largest k, and it changes as the FR network learns (its losses fall, so clearing
    the floor needs more mixing later in training): the problem is adaptive.

    Why a constraint and not a weighted sum of the mixed loss and a measured utility: on the default env, the
    measured utilities hardly respond to k (learning progress of a step, ``clean_loss - clean_loss_after``:
    0.0109 at k=2 vs 0.0101 at k=6; final accuracy 0.19 for both), while the mixed loss does (2.17 vs 2.57),
    so any moderate weight leaves "always the largest k" optimal. Both terms are reported in
    ``info["reward_terms"]``.

    Measured with ``python benchmarks/bench_rewards.py`` (which prints all of these figures). With the default
    ``floor=0.7`` on the default env (2 seeds x 200 steps per fixed k), the best
    fixed k is 4 (mean reward -0.149, vs -0.167 for k=6 and -0.278 for k=2), the best k per quarter of the episode
    rises 2, 2, 3, 4, and choosing the best k at every step would score -0.119: room for an adaptive strategy.

    :param floor: privacy floor on ``mixed_loss / log(num_classes)``, in ``(0, 2]``.
    :param cost: weight of the mixing cost (>= 0).
    :param penalty: weight of the privacy shortfall (>= 0; make it larger than ``cost``).
    """

    def __init__(self, floor: float = 0.7, cost: float = 1.0, penalty: float = 5.0) -> None:
        if not 0 < floor <= 2:
            raise ValueError(f"floor={floor} is out of range: accepted 0 < floor <= 2 (in units of log(num_classes))")
        if not (cost >= 0 and penalty >= 0):
            raise ValueError(f"cost={cost} and penalty={penalty} must be >= 0")
        self.floor, self.cost, self.penalty = float(floor), float(cost), float(penalty)
        self.requires = frozenset({"mixed_loss", "clean_loss", "num_classes"})

    def __call__(self, record: StepRecord) -> dict[str, float]:
        scale = math.log(record.num_classes)
        m, c = record.mixed_loss / scale, record.clean_loss / scale
        return {"mixing_cost": -self.cost * (m - c), "privacy_shortfall": -self.penalty * max(0.0, self.floor - m)}

    def __repr__(self) -> str:
        return f"UtilityAware(floor={self.floor}, cost={self.cost}, penalty={self.penalty})"


@register_reward("constrained")
class ConstrainedUtility(Reward):
    """Held-out utility under a privacy target, its multiplier adapted by dual ascent.

    Utility is the step's validation gain (:attr:`StepRecord.validation_gain`, in units of ``log(num_classes)``):
    what the update taught the FR network about faces it does not train on, never measured on the batch just
    trained on nor on the test faces. Privacy is a measured exposure, not a training loss: the mean largest weight
    of the step's mixes (:attr:`StepRecord.dominant_weights`; 0.75 at k = 2 with Dirichlet(1) weights, 0.41 at
    k = 6), which must stay at most ``target``. The reward is the Lagrangian, and after each step the multiplier
    takes a dual-ascent step on the violation::

        reward     = gain / log C  -  lambda * (dominant - target)
        lambda    <- max(0, lambda + lr * (dominant - target))

    so lambda rises while the target is exceeded and falls (to 0) while it holds; each episode restarts it at
    ``multiplier``. Terms ``utility`` and ``constraint`` are reported in ``info["reward_terms"]``; the current
    multiplier is :attr:`multiplier`.

    :param target: the privacy target on the mean dominant weight, in ``(0, 1]``.
    :param lr: the dual step size (> 0).
    :param multiplier: lambda at the start of each episode (>= 0).
    """

    requires = frozenset({"validation_gain", "num_classes"})

    def __init__(self, target: float = 0.55, lr: float = 0.5, multiplier: float = 0.0) -> None:
        if not 0 < target <= 1:
            raise ValueError(f"target={target} is out of range: accepted 0 < target <= 1 (a mixing weight)")
        if not (lr > 0 and multiplier >= 0):
            raise ValueError(f"lr={lr} must be > 0 and multiplier={multiplier} >= 0")
        self.target, self.lr, self.initial = float(target), float(lr), float(multiplier)
        self.multiplier = self.initial

    def reset(self, start: EpisodeStart) -> None:
        self.multiplier = self.initial

    def __call__(self, record: StepRecord) -> dict[str, float]:
        if not math.isfinite(record.validation_gain):
            raise ValueError("the constrained reward reads validation_gain, which this step did not measure: build "
                             "the env with validation_fraction > 0")
        if len(record.dominant_weights) == 0:
            raise ValueError("the constrained reward reads the step's dominant mixing weights, absent from this record")
        violation = float(np.mean(record.dominant_weights)) - self.target
        terms = {"utility": record.validation_gain / math.log(record.num_classes),
                 "constraint": -self.multiplier * violation}
        self.multiplier = max(0.0, self.multiplier + self.lr * violation)
        return terms

    def on_fault(self, record: StepRecord) -> float:
        return 0.0

    def __repr__(self) -> str:
        return f"ConstrainedUtility(target={self.target}, lr={self.lr}, multiplier={self.initial})"


@register_reward("attack_aware")
class AttackAware(Reward):
    """Leakage prevented, as scored by an online attacker, plus the utility the step bought.

    The env's online data-level attacker (:class:`mixup_env.attacker.OnlineAttacker`: trained on public faces
    only, refitted every ``refit_every`` steps on the k the policy is choosing) reconstructs each mix's dominant
    face; a face's leakage is the closest any reconstruction of a mix it entered came to it (centred cosine), and
    the leakage prevented is what it would have leaked unmixed (masked only) minus that
    (:attr:`StepRecord.leakage_prevented`). Utility is held out where it can be: ``utility="validation"`` reads
    the step's validation gain (an env with ``validation_fraction > 0``), ``"progress"`` the update's progress on
    its own batch, clean (``clean_loss - clean_loss_after``), both in units of ``log(num_classes)``::

        reward = privacy * leakage_prevented  +  utility_weight * gain / log C
                 `------- "privacy" -------'     `------- "utility" -------'

    The terms are reported in ``info["reward_terms"]``, the leakages in ``info["leakage_per_sample"]`` and
    ``info["leakage_unmixed_per_sample"]``. The env must be built with ``attacker_faces``.

    The weights set the trade-off, and no default makes it right everywhere: on the built-in synthetic faces
    (``recipe="tiny"``, batches of 32, 60 steps, fixed k, steps 10-60) the privacy term was 0.137, 0.173, 0.191
    at k = 2, 4, 6 and the validation gain / log C 0.0014, 0.0007, 0.0005 per step, so at the default
    ``utility_weight=50`` the fixed k lie within 0.013 of each other (k = 6 ahead) and at 100 k = 2 wins:
    measure the best fixed k under the weights you choose before judging an agent against it.

    :param privacy: weight of the leakage prevented (>= 0).
    :param utility_weight: weight of the utility (>= 0).
    :param utility: ``"validation"`` or ``"progress"``.
    """

    UTILITIES = ("validation", "progress")

    def __init__(self, privacy: float = 1.0, utility_weight: float = 50.0, utility: str = "validation") -> None:
        if utility not in self.UTILITIES:
            raise ValueError(f"utility={utility!r} is invalid: accepted {', '.join(map(repr, self.UTILITIES))}")
        if not (privacy >= 0 and utility_weight >= 0):
            raise ValueError(f"privacy={privacy} and utility_weight={utility_weight} must be >= 0")
        self.privacy, self.utility_weight, self.utility = float(privacy), float(utility_weight), utility
        gain = "validation_gain" if utility == "validation" else "learning_progress"
        self.requires = _check_requires({"leakage_prevented", gain, "num_classes"}, "attack_aware")

    def __call__(self, record: StepRecord) -> dict[str, float]:
        prevented = record.leakage_prevented
        if not math.isfinite(prevented):
            raise ValueError("the attack-aware reward reads the leakage scored by the env's online attacker, absent "
                             "from this record: build the env with attacker_faces=<public faces>")
        gain = record.validation_gain if self.utility == "validation" else record.learning_progress
        if not math.isfinite(gain):
            raise ValueError(f"the attack-aware reward's utility {self.utility!r} was not measured at this step"
                             + (": build the env with validation_fraction > 0" if self.utility == "validation" else ""))
        return {"privacy": self.privacy * prevented,
                "utility": self.utility_weight * gain / math.log(record.num_classes)}

    def __repr__(self) -> str:
        return (f"AttackAware(privacy={self.privacy}, utility_weight={self.utility_weight}, "
                f"utility={self.utility!r})")
