"""mixup_env.actions: one codec per action mode, its space, decode and encode."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from mixup_env.actions import ACTION_CODECS, ContinuousCodec, DiscreteCodec, make_codec

K = (2, 3, 5)


@pytest.mark.parametrize("mode", list(ACTION_CODECS))
def test_every_k_round_trips_and_sampled_actions_decode_to_k_values(mode):
    codec = make_codec(mode, K, batch_size=4)
    assert codec.mode == mode and codec.per_sample == mode.startswith("sample")
    assert isinstance(codec, DiscreteCodec if mode.endswith("discrete") else ContinuousCodec)
    for k in K:
        action = codec.encode(k)
        assert codec.space.contains(action), (mode, k, action)
        ks, alpha = codec.decode(action)
        assert ks.tolist() == [k] * 4 and alpha == 1.0
    codec.space.seed(0)
    for _ in range(20):
        ks, _ = codec.decode(codec.space.sample())
        assert ks.shape == (4,) and set(ks.tolist()) <= set(K)
    if codec.per_sample:
        assert codec.decode(codec.encode([5, 2, 3, 2]))[0].tolist() == [5, 2, 3, 2]
        with pytest.raises(ValueError, match=f"give one k or 4 for mode '{mode}', got 2"):
            codec.encode([2, 3])
    else:
        with pytest.raises(ValueError, match=f"give one k for mode '{mode}', got 4"):
            codec.encode([2, 2, 2, 2])
    with pytest.raises(ValueError, match=r"k \[4\] not in k_values=\(2, 3, 5\)"):
        codec.encode(4)


def test_continuous_codec_picks_the_nearest_point_and_controls_alpha():
    codec = make_codec("sample_continuous", K, batch_size=2, control_alpha=True, alpha_range=(0.1, 10.0))
    assert codec.space == spaces.Box(-1.0, 1.0, (4,), np.float32)
    ks, alpha = codec.decode(np.array([-1.0, 0.2, -1.0, 1.0], np.float32))
    assert ks.tolist() == [2, 3] and np.allclose(alpha, [0.1, 10.0])  # log-uniform over the range
    assert np.allclose(codec.decode(codec.encode(5, alpha=2.0))[1], 2.0)
    with pytest.raises(ValueError, match=r"expected 4 finite values in \[-1, 1\] \(k values, then alpha values\)"):
        codec.decode(np.array([0.0, 0.0, 0.0, 2.0], np.float32))


def test_codecs_refuse_what_their_mode_cannot_do():
    with pytest.raises(ValueError, match="unknown action_mode 'grid'; accepted: batch_discrete, sample_discrete"):
        make_codec("grid", K, 4)
    with pytest.raises(ValueError, match="control_alpha=True needs a continuous action_mode, got 'batch_discrete'"):
        make_codec("batch_discrete", K, 4, control_alpha=True)
    with pytest.raises(ValueError, match="expected 4 integers, each in 0..2, the index of k"):
        make_codec("sample_discrete", K, 4).decode(np.array([0, 1, 2, 3]))


def test_dithered_rounding_follows_the_action_in_expectation():
    codec = make_codec("sample_continuous", (2, 3, 4, 5, 6), 4000, rounding="dither")
    rng = np.random.default_rng(0)
    for a in (-1.0, -0.3, 0.0, 0.1, 0.55, 1.0):
        k, _ = codec.decode(np.full(4000, a, np.float32), rng)
        x = (a + 1) / 2 * 4  # the position among the 5 k values
        assert set(np.unique(k)) <= {2 + int(np.floor(x)), 2 + min(int(np.ceil(x)), 4)}  # only the two neighbours
        assert float(np.mean(k - 2)) == pytest.approx(x, abs=0.03)  # ... in the proportion that keeps the mean
    # near the midpoint the nearest rounding is flat (k = 4), the dithered one is not
    nearest = make_codec("sample_continuous", (2, 3, 4, 5, 6), 4000)
    assert set(nearest.decode(np.full(4000, 0.2, np.float32))[0].tolist()) == {4}
    assert set(codec.decode(np.full(4000, 0.2, np.float32), rng)[0].tolist()) == {4, 5}
    a = np.linspace(-1, 1, 4000).astype(np.float32)
    k1 = codec.decode(a, np.random.default_rng(3))[0]
    assert np.array_equal(k1, codec.decode(a, np.random.default_rng(3))[0])  # the same draws, the same k
    with pytest.raises(ValueError, match="needs the randomness to round with: pass rng"):
        codec.decode(a)
    with pytest.raises(ValueError, match="rounding='dither' needs a continuous action_mode, got 'sample_discrete'"):
        make_codec("sample_discrete", (2, 3), 4, rounding="dither")
    with pytest.raises(ValueError, match="rounding='up' is unknown: accepted nearest, dither"):
        make_codec("batch_continuous", (2, 3), 4, rounding="up")


def test_a_dithered_env_is_deterministic_under_a_seed():
    import gymnasium as gym

    import mixup_env  # noqa: F401

    def run():
        env = gym.make("mixup_env/FrequencyMixupPerSampleContinuous-v0", batch_size=16, episode_steps=4,
                       recipe="tiny", continuous_rounding="dither")
        env.reset(seed=7)
        return [env.step(np.full(16, 0.1, np.float32))[4]["k_per_sample"].copy() for _ in range(3)]

    first, second = run(), run()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert {4, 5} <= set(np.concatenate(first).tolist())
