import pytest

from mixup_env.rewards import StepRecord, get_reward, list_rewards, make_reward, register_reward, _REWARDS

RECORD = StepRecord(mixed_loss=2.5, clean_loss=1.0, accuracy=0.4, evaluated=True, k_mean=4.0, step=3,
                    episode_steps=10, num_classes=20)


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
