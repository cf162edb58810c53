import dataclasses
import math

import numpy as np
import pytest

from mixup_env.rewards import (
    _REWARDS,
    ON_DEMAND,
    Reward,
    StepRecord,
    UtilityAware,
    WeightedSum,
    get_reward,
    list_rewards,
    make_reward,
    record_terms,
    register_reward,
    reward_requires,
)

RECORD = StepRecord(mixed_loss=2.5, clean_loss=1.0, clean_loss_after=0.8, accuracy=0.4, evaluated=True, k_mean=4.0,
                    alpha_mean=1.0, step=3, episode_steps=10, num_classes=20)


@pytest.fixture
def clean_registry():
    before = dict(_REWARDS)
    yield
    _REWARDS.clear()
    _REWARDS.update(before)


def test_fr_loss_is_the_mixed_loss():
    assert "fr_loss" in list_rewards()
    assert make_reward("fr_loss")(RECORD) == 2.5


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown reward 'nope'; known rewards: .*fr_loss"):
        get_reward("nope")
    with pytest.raises(ValueError, match="known rewards"):
        make_reward("nope")


def test_register_function_with_kwargs(clean_registry):
    @register_reward("gap")
    def gap(record, weight=1.0):
        return record.mixed_loss - weight * record.clean_loss

    assert "gap" in list_rewards()
    assert make_reward("gap")(RECORD) == 1.5
    assert make_reward("gap", {"weight": 0.5})(RECORD) == 2.0
    with pytest.raises(TypeError, match=r"does not accept reward_kwargs \{'wieght': 1\}"):
        make_reward("gap", {"wieght": 1})


def test_register_class(clean_registry):
    @register_reward("scaled")
    class Scaled:
        def __init__(self, factor: float = 2.0) -> None:
            self.factor = factor

        def __call__(self, record: StepRecord) -> float:
            return self.factor * record.accuracy

    assert make_reward("scaled", {"factor": 10})(RECORD) == 4.0


def test_name_clash_needs_overwrite(clean_registry):
    with pytest.raises(ValueError, match="already registered.*overwrite=True"):
        register_reward("fr_loss")(lambda r: 0.0)
    register_reward("fr_loss", overwrite=True)(lambda r: 0.0)
    assert make_reward("fr_loss")(RECORD) == 0.0
    with pytest.raises(ValueError, match="non-empty string"):
        register_reward("")


def test_record_derived_terms():
    assert RECORD.learning_progress == pytest.approx(0.2)
    assert RECORD.k_fraction == pytest.approx(0.5)  # k=4 in 2..6
    assert {"mixed_loss", "clean_loss", "learning_progress", "k_fraction", "accuracy"} <= set(record_terms())


def test_weighted_sum_reports_each_weighted_term():
    fn = make_reward("weighted_sum", {"terms": {"mixed_loss": 1.0, "clean_loss": -0.5, "fr_loss": 2.0, "k_fraction": -1}})
    terms = fn(RECORD)
    assert terms == {"mixed_loss": 2.5, "clean_loss": -0.5, "fr_loss": 5.0, "k_fraction": -0.5}
    with pytest.raises(ValueError, match=r"unknown reward term 'speed'; accepted: record quantities .*mixed_loss"):
        WeightedSum({"speed": 1.0})
    with pytest.raises(ValueError, match="non-empty mapping"):
        WeightedSum({})


def test_utility_aware_terms_and_values():
    L = math.log(20)
    fn = UtilityAware(floor=0.7, cost=1.0, penalty=5.0)
    rec = dataclasses.replace(RECORD, mixed_loss=0.5 * L, clean_loss=0.3 * L)
    terms = fn(rec)
    assert terms["mixing_cost"] == pytest.approx(-0.2)
    assert terms["privacy_shortfall"] == pytest.approx(-5 * 0.2)
    above = fn(dataclasses.replace(rec, mixed_loss=0.9 * L))
    assert above["privacy_shortfall"] == 0.0 and above["mixing_cost"] == pytest.approx(-0.6)
    with pytest.raises(ValueError, match="floor=3"):
        UtilityAware(floor=3)


def test_utility_aware_optimum_is_not_the_largest_k():
    """Mixed loss rising (concavely) with k, as measured: the best k clears the floor with the least excess."""
    L = math.log(20)
    clean = 0.5
    mixed_by_k = {2: 0.62, 3: 0.68, 4: 0.72, 5: 0.75, 6: 0.77}  # in units of L
    fn = make_reward("utility_aware")  # floor 0.7
    score = {k: sum(fn(dataclasses.replace(RECORD, mixed_loss=m * L, clean_loss=clean * L)).values())
             for k, m in mixed_by_k.items()}
    assert max(score, key=score.get) == 4
    assert max(make_reward("fr_loss")(dataclasses.replace(RECORD, mixed_loss=m * L)) for m in mixed_by_k.values()) \
        == make_reward("fr_loss")(dataclasses.replace(RECORD, mixed_loss=0.77 * L))
    # later in training, losses fall: clearing the floor needs more mixing
    later = {k: m - 0.05 for k, m in mixed_by_k.items()}
    score = {k: sum(fn(dataclasses.replace(RECORD, mixed_loss=m * L, clean_loss=(clean - 0.05) * L)).values())
             for k, m in later.items()}
    assert max(score, key=score.get) == 5


def test_reward_kwargs_not_taken_raise_clearly():
    with pytest.raises(TypeError, match=r"reward 'utility_aware' does not accept reward_kwargs \{'weight': 2\}"):
        make_reward("utility_aware", {"weight": 2})
    with pytest.raises(TypeError, match=r"reward 'fr_loss' does not accept reward_kwargs"):
        make_reward("fr_loss", {"scale": 2})


def test_rewards_declare_what_the_env_must_measure(clean_registry):
    # built-in rewards: only weighted terms that read the loss after the update need it measured
    assert reward_requires(make_reward("fr_loss")) == frozenset()
    assert reward_requires(make_reward("utility_aware")) == frozenset()
    assert reward_requires(make_reward("weighted_sum", {"terms": {"mixed_loss": 1.0}})) == frozenset()
    assert reward_requires(make_reward("weighted_sum", {"terms": {"learning_progress": 1.0}})) == {"clean_loss_after"}
    assert reward_requires(make_reward("weighted_sum", {"terms": {"clean_loss_after": -1.0}})) == {"clean_loss_after"}

    @register_reward("undeclared")
    def undeclared(record):
        return record.clean_loss_after

    @register_reward("declared", requires=("mixed_loss",))
    def declared(record, w=1.0):
        return w * record.mixed_loss

    assert reward_requires(make_reward("undeclared")) == ON_DEMAND  # silent = measure everything
    assert reward_requires(make_reward("declared", {"w": 2.0})) == frozenset()  # through functools.partial
    # a weighted sum over another reward inherits what that reward needs
    assert reward_requires(make_reward("weighted_sum", {"terms": {"declared": 1.0, "clean_loss_after": 1.0}})) == {
        "clean_loss_after"}
    # ... and a sum over a reward that says nothing says nothing itself: it gets what the env can measure
    silent = make_reward("weighted_sum", {"terms": {"undeclared": 1.0}})
    assert silent.requires is None and reward_requires(silent) == ON_DEMAND


@pytest.mark.parametrize("requires, error, match", [
    (("mixed_loss", "bogus"), ValueError, r"unknown quantities \['bogus'\]"),
    ("mixed_loss", TypeError, "a collection of quantity names"),
])
def test_register_reward_refuses_bad_requires(clean_registry, requires, error, match):
    with pytest.raises(error, match=match):
        register_reward("bad", requires=requires)


# ------------------------------------------------------------------------------------------ reward objects
class Counting(Reward):
    """A stateful reward object: counts episodes and steps, reads only the mixed loss, pays -1 on a fault."""

    requires = frozenset({"mixed_loss"})

    def __init__(self):
        self.resets, self.steps, self.starts = 0, 0, []

    def reset(self, start):
        self.resets += 1
        self.steps = 0
        self.starts.append(start)

    def __call__(self, record):
        self.steps += 1
        return record.mixed_loss + 100 * self.steps

    def on_fault(self, record):
        return -1.0


def test_a_reward_object_is_reset_each_episode_and_declares_its_inputs(tiny_env_kwargs):
    import gymnasium as gym
    import torch

    import mixup_env  # noqa: F401

    reward = Counting()
    env = gym.make("mixup_env/FrequencyMixup-v0", **tiny_env_kwargs, reward=reward)
    base = env.unwrapped
    assert base.reward_fn is reward and base.measured == frozenset()  # no clean_loss_after pass
    assert base.reward_name.endswith("Counting")
    env.reset(seed=0)
    assert reward.resets == 1 and reward.starts[0].episode_steps == tiny_env_kwargs["episode_steps"]
    for step in (1, 2):
        _, r, _, _, info = env.step(0)
        assert r == pytest.approx(info["mixed_loss"] + 100 * step) and "clean_loss_after" not in info
    env.reset(seed=1)
    assert reward.resets == 2 and reward.steps == 0
    base._batch = (torch.full_like(base._batch[0], float("nan")), base._batch[1])  # a poisoned batch: a fault
    _, r, _, truncated, info = env.step(0)
    assert truncated and info["truncated_reason"] == "non-finite FR loss" and r == -1.0


def test_a_callable_or_a_class_is_a_reward_and_bad_ones_are_named(tiny_env_kwargs):
    import gymnasium as gym

    import mixup_env  # noqa: F401
    from mixup_env.rewards import as_reward, reward_label

    env = gym.make("mixup_env/FrequencyMixup-v0", **tiny_env_kwargs, reward=lambda rec: -rec.k_mean)
    env.reset(seed=0)
    _, r, _, _, info = env.step(env.unwrapped.action_for_k(3))
    assert r == -3.0 and env.unwrapped.measured == ON_DEMAND - {"validation_loss", "leakage"}  # a callable that says
    # nothing gets everything this env can measure (it has no validation split, no attacker)
    obj = as_reward(UtilityAware, {"floor": 0.5})
    assert obj(RECORD) == UtilityAware(floor=0.5)(RECORD) and reward_label(UtilityAware).endswith("UtilityAware")
    assert as_reward("fr_loss")(RECORD) == 2.5 and reward_label("fr_loss") == "fr_loss"
    with pytest.raises(TypeError, match="reward_kwargs .* go with a reward name or class"):
        as_reward(lambda rec: 0.0, {"price": 1})
    with pytest.raises(TypeError, match="reward must be a registered name, a Reward object or class, or a callable"):
        as_reward(3.0)
    with pytest.raises(TypeError, match="reward class UtilityAware does not accept reward_kwargs"):
        as_reward(UtilityAware, {"bogus": 1})
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        as_reward("nope")


SPAWNED_REWARD = '''
import numpy as np
from agents import make_vec_env
from mixup_env import Reward


class PricedMixing(Reward):  # defined in __main__: a spawned worker can only get it with the env, pickled
    requires = frozenset({"mixed_loss", "k_mean"})

    def __call__(self, record):
        return record.mixed_loss - 0.5 * record.k_mean


if __name__ == "__main__":
    venv = make_vec_env("mixup_env/FrequencyMixup-v0", 2, 0, {"batch_size": 16, "episode_steps": 4,
                        "recipe": "tiny", "reward": PricedMixing()}, vec_env="subproc")
    venv.reset()
    _, rewards, _, infos = venv.step(np.array([0, 4]))
    for r, info in zip(rewards, infos):
        assert abs(r - (info["mixed_loss"] - 0.5 * info["k"])) < 1e-5, (r, info)
    venv.close()
    print("spawned rewards", [round(float(r), 4) for r in rewards], [info["k"] for info in infos])
'''


@pytest.mark.slow
def test_a_reward_object_from_main_works_in_spawned_workers(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "user_script.py"
    script.write_text(SPAWNED_REWARD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "spawned rewards" in res.stdout and "[2.0, 6.0]" in res.stdout


def test_label_entropy_is_the_unlearnable_part_of_the_soft_cross_entropy():
    import torch

    from fr_models.heads import SoftmaxHead
    from mixup_env.mixing import label_entropy, mix_batch

    n, small = 4096, 256
    gen = torch.Generator().manual_seed(0)
    head = SoftmaxHead(small, small)
    with torch.no_grad():
        head.fc.weight.copy_(torch.eye(small))
        head.fc.bias.zero_()
    fr, honest = [], []
    for k in range(2, 7):
        mix = mix_batch(torch.zeros(n, 1), torch.arange(n), k, n, 1.0, gen)
        # Dirichlet(1) weights over k distinct identities: E[H] = H_k - 1 nats
        expected = sum(1 / i for i in range(1, k + 1)) - 1
        assert float(label_entropy(mix.soft_labels).mean()) == pytest.approx(expected, abs=0.02)
        # a model that predicts each soft label exactly: its loss is all label entropy, nothing left to learn
        mix = mix_batch(torch.zeros(small, 1), torch.arange(small), k, small, 1.0, gen)
        h = label_entropy(mix.soft_labels)
        with torch.no_grad():
            loss = head(mix.soft_labels.clamp_min(1e-30).log(), mix.soft_labels)
        record = dataclasses.replace(RECORD, mixed_loss=float(loss.mean()), label_entropy=float(h.mean()))
        fr.append(make_reward("fr_loss")(record))
        honest.append(make_reward("fr_loss_learnable")(record))
    assert all(b > a + 0.1 for a, b in zip(fr, fr[1:]))  # the paper's reward rises with k on a perfect model ...
    assert honest == pytest.approx([0.0] * 5, abs=1e-4)  # ... the honest one does not
    assert float(label_entropy(torch.eye(3))[0]) == 0.0
    # two partners of one identity: the label is theirs merged, its entropy that of (0.75, 0.25)
    merged = torch.tensor([[0.75, 0.25, 0.0]])
    assert float(label_entropy(merged)[0]) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    with pytest.raises(ValueError, match="negative entries have no label entropy"):
        label_entropy(torch.tensor([[1.05, -0.05]]))
    with pytest.raises(ValueError, match=r"must be \(N, num_classes\)"):
        label_entropy(torch.ones(3))
    assert reward_requires(make_reward("fr_loss_learnable")) == frozenset()  # nothing extra to measure
    assert "learnable_loss" in record_terms() and "label_entropy" in record_terms()


def test_the_constrained_reward_s_multiplier_follows_the_violation():
    from mixup_env.rewards import ConstrainedUtility, EpisodeStart

    r = make_reward("constrained", {"target": 0.5, "lr": 1.0})
    assert isinstance(r, ConstrainedUtility) and r.multiplier == 0.0
    r.reset(EpisodeStart(10, 20, (2, 6)))
    hot = dataclasses.replace(RECORD, validation_gain=0.3, dominant_weights=np.full(8, 0.75))  # k = 2-like mixes
    cool = dataclasses.replace(RECORD, validation_gain=0.3, dominant_weights=np.full(8, 0.40))  # k = 6-like
    seen = []
    for rec in (hot, hot, hot, cool, cool, cool, cool):
        terms = r(rec)
        assert terms["utility"] == pytest.approx(0.3 / math.log(20))
        seen.append(r.multiplier)
    assert seen[:3] == pytest.approx([0.25, 0.5, 0.75])  # rises while the target is exceeded ...
    assert seen[3:] == pytest.approx([0.65, 0.55, 0.45, 0.35])  # ... and falls while it holds
    assert r(cool)["constraint"] == pytest.approx(-0.35 * -0.1)  # a held target pays, in proportion to lambda
    for _ in range(10):
        r(cool)
    assert r.multiplier == 0.0  # never below 0
    r.reset(EpisodeStart(10, 20, (2, 6)))
    assert r.multiplier == 0.0
    with pytest.raises(ValueError, match="build the env with validation_fraction > 0"):
        r(RECORD)
    with pytest.raises(ValueError, match=r"target=1.5 is out of range: accepted 0 < target <= 1"):
        make_reward("constrained", {"target": 1.5})
    with pytest.raises(ValueError, match="lr=0 must be > 0"):
        make_reward("constrained", {"lr": 0})
    assert reward_requires(r) == frozenset({"validation_loss"})
