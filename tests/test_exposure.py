"""mixup_env.exposure and the weight cap: how visible each face has been in a run's mixes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixup_env import FrequencyMixupEnv
from mixup_env.exposure import Exposure, batch_max_weight
from mixup_env.mixing import cap_weights, check_max_weight, mix_batch

TINY = {"batch_size": 16, "episode_steps": 6, "eval_every": 3, "recipe": "tiny"}


def _brute(n_faces, steps):
    """Per-face figures by plain loops over (faces, partners, weights) of each step."""
    mixes, sample, wsum, top, dom = (np.zeros(n_faces) for _ in range(5))
    for faces, partners, weights in steps:
        for i in range(len(faces)):
            sample[faces[i]] += 1
            row = [(faces[p], w) for p, w in zip(partners[i].tolist(), weights[i].tolist()) if w > 0]
            for f, w in row:
                mixes[f] += 1
                wsum[f] += w
                top[f] = max(top[f], w)
            dom[max(row, key=lambda fw: fw[1])[0]] += 1
    return mixes, sample, wsum, top, dom


def test_exposure_counts_every_mix_a_face_enters_as_sample_and_partner():
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    e, steps = Exposure(40), []
    for _ in range(5):
        faces = torch.from_numpy(rng.permutation(40)[:16])
        k = torch.randint(1, 7, (16,), generator=gen)
        mix = mix_batch(torch.randn(16, 3), torch.zeros(16, dtype=torch.long), k, 2, 1.0, gen)
        e.update(faces, mix.partners, mix.weights)
        steps.append((faces.numpy(), mix.partners, mix.weights))
    mixes, sample, wsum, top, dom = _brute(40, steps)
    np.testing.assert_array_equal(e.mixes.numpy(), mixes)
    np.testing.assert_array_equal(e.as_sample.numpy(), sample)
    np.testing.assert_allclose(e.weight_sum.numpy(), wsum, atol=1e-6)
    np.testing.assert_allclose(e.max_weight.numpy(), top, atol=1e-6)
    np.testing.assert_array_equal(e.dominated.numpy(), dom)
    assert int(e.dominated.sum()) == int(e.as_sample.sum()) == 80  # one dominant face per mix
    s = e.summary()
    assert s["faces_mixed"] == int((e.mixes > 0).sum()) and 0 < s["mean_max_weight"] <= 1
    back = Exposure(40)
    back.load_state_dict(e.state_dict())
    assert torch.equal(back.max_weight, e.max_weight) and torch.equal(back.mixes, e.mixes)
    with pytest.raises(ValueError, match="of 40 faces cannot be loaded into one of 3"):
        Exposure(3).load_state_dict(e.state_dict())
    with pytest.raises(ValueError, match=r"face indices must lie in 0..39, got 0..40"):
        e.update(torch.tensor([0, 40]), torch.tensor([[0], [1]]), torch.ones(2, 1))


def test_a_small_k_does_not_bound_a_face_s_exposure():
    """Half the batch at k = 2, half at k = 6: a k = 6 sample is also a partner in others' mixes, so its largest
    weight in the batch exceeds the weight it has in its own mix (the issue's point)."""
    gen = torch.Generator().manual_seed(1)
    k = torch.tensor([2, 6] * 256)
    mix = mix_batch(torch.randn(512, 3), torch.zeros(512, dtype=torch.long), k, 2, 1.0, gen)
    top = batch_max_weight(mix.partners, mix.weights)
    own = mix.weights[:, 0]
    assert bool((top >= own).all())
    six = k == 6
    assert float(top[six].mean()) > float(own[six].mean()) + 0.1


def test_cap_weights_caps_keeps_sums_zeros_and_order():
    gen = torch.Generator().manual_seed(2)
    k = torch.randint(2, 7, (2000,), generator=gen)
    mix = mix_batch(torch.randn(2000, 1), torch.zeros(2000, dtype=torch.long), k, 2, 1.0, gen)
    w = mix.weights.double()
    capped = cap_weights(w, 0.65)
    assert float(capped.max()) <= 0.65 + 1e-12
    torch.testing.assert_close(capped.sum(1), torch.ones(2000, dtype=torch.float64))
    assert torch.equal(capped > 0, w > 0)  # unused slots stay unused, no face drops out
    under = (w <= 0.65).all(1)
    assert torch.equal(capped[under], w[under])  # a row under the cap is untouched
    # the weights left under the cap keep their proportions (the excess went to them pro rata)
    free = (capped > 0) & (capped < 0.65 - 1e-9)
    ratio = torch.where(free, capped / w.clamp_min(1e-300), torch.nan)
    spread = ratio.nan_to_num(1.0).amax(1) - torch.where(free, ratio, torch.inf).amin(1).nan_to_num(1.0)
    assert float(spread[free.any(1) & ~under].abs().max()) < 1e-9
    assert bool((ratio[free & ~under[:, None]] > 1).all())  # and each of them grew
    two = k == 2  # k = 2 under a 0.65 cap: the dominant weight lies in [0.5, 0.65]
    assert 0.5 <= float(capped[two].max(1).values.min()) and float(capped[two].max(1).values.max()) <= 0.65 + 1e-12
    with pytest.raises(ValueError, match=r"max_weight=0.5 cannot cap the weights of a mix of k = \[2\]: accepted "
                                         r"1/k < max_weight <= 1 for every k mixed \(k = 1: only 1\)"):
        check_max_weight(0.5, (2, 3))
    with pytest.raises(ValueError, match=r"of k = \[1\]"):
        check_max_weight(0.65, (1, 2))
    with pytest.raises(ValueError, match=r"max_weight=1.5"):
        check_max_weight(1.5, (2,))
    assert check_max_weight(1.0, (1, 2)) == 1.0


def test_the_env_reports_exposure_caps_weights_and_checkpoints_it(tmp_path):
    env = FrequencyMixupEnv(**TINY, k_values=(2, 6), max_weight=0.65)
    env.reset(seed=0)
    total = 0
    for a in (0, 1, 1):
        _, _, _, _, info = env.step(a)
        assert info["dominant_weight_per_sample"].max() <= 0.65 + 1e-6
        top = info["max_weight_per_sample"]  # every face is in its own mix at least; the batch's largest weight
        assert (top > 0).all() and top.max() == pytest.approx(info["dominant_weight_per_sample"].max())
        total += int(info["k_per_sample"].sum())
    assert int(env.exposure.mixes.sum()) == total and int(env.exposure.as_sample.sum()) == 3 * 16
    assert env.exposure.max_weight.max() <= 0.65 + 1e-6
    env.save_checkpoint(tmp_path / "env.pt")
    back = FrequencyMixupEnv(**TINY, k_values=(2, 6), max_weight=0.65)
    back.load_checkpoint(tmp_path / "env.pt")
    assert torch.equal(back.exposure.mixes, env.exposure.mixes)
    assert torch.equal(back.exposure.max_weight, env.exposure.max_weight)
    o1, r1, *_ = env.step(1)
    o2, r2, *_ = back.step(1)
    assert r1 == r2 and np.array_equal(o1, o2) and torch.equal(back.exposure.weight_sum, env.exposure.weight_sum)
    env.reset(seed=1)
    assert int(env.exposure.mixes.sum()) == 0  # a new episode, a new account
    with pytest.raises(ValueError, match="was saved by an env configured differently: max_weight 0.65 there, None"):
        FrequencyMixupEnv(**TINY, k_values=(2, 6)).load_checkpoint(tmp_path / "env.pt")
    with pytest.raises(ValueError, match=r"max_weight=0.4 cannot cap the weights of a mix of k = \[2\]"):
        FrequencyMixupEnv(**TINY, k_values=(2, 6), max_weight=0.4)


def test_exposure_keeps_each_face_s_largest_leakage_and_summarises_the_scored_ones():
    e = Exposure(4)
    assert "mean_max_leakage" not in {**e.summary()}  # nothing scored
    e.update(torch.tensor([0, 1, 2]), torch.tensor([[0, 1], [1, 2], [2, 0]]), torch.full((3, 2), 0.5))
    e.record_leakage(torch.tensor([0, 1]), torch.tensor([0.3, 0.5]))
    e.record_leakage(torch.tensor([1, 2]), torch.tensor([0.2, 0.6]))
    assert e.max_leakage[:3].tolist() == pytest.approx([0.3, 0.5, 0.6]) and torch.isnan(e.max_leakage[3])
    assert e.summary()["mean_max_leakage"] == pytest.approx((0.3 + 0.5 + 0.6) / 3)
    back = Exposure(4)
    back.load_state_dict(e.state_dict())
    assert torch.equal(back.max_leakage[:3], e.max_leakage[:3])
    with pytest.raises(ValueError, match="one leakage per face"):
        e.record_leakage(torch.tensor([0, 1]), torch.tensor([0.1]))


def test_the_model_card_records_the_cap_and_the_data_level_attacker_simulates_it():
    from fr_models.card import ModelCard
    from privacy.attacks.datalevel import defence_mix

    env = FrequencyMixupEnv(**TINY, k_values=(2, 6), max_weight=0.65, dirichlet_alpha=0.5)
    env.reset(seed=0)
    card = env.trainer.card
    assert card.max_weight == 0.65 and card.dirichlet_alpha == 0.5
    assert ModelCard.from_dict(card.as_dict()) == card
    x = torch.randn(64, 3, 4, 4)
    _, _, capped = defence_mix([2], max_weight=card.max_weight)(x, torch.Generator().manual_seed(0))
    _, _, free = defence_mix([2])(x, torch.Generator().manual_seed(0))
    assert capped.max() <= 0.65 + 1e-6 < free.max()
    assert ModelCard.from_dict({"input": "pixel"}).max_weight is None  # older cards: uncapped, alpha 1


def test_the_action_can_choose_each_mix_s_cap():
    env = FrequencyMixupEnv(**TINY, action_mode="sample_continuous", k_values=(2, 4, 6), control_cap=True)
    assert env.action_space.shape == (32,)
    env.reset(seed=0)
    k_part = env.action_for_k([2] * 8 + [6] * 8)[:16]
    cap_part = np.concatenate([np.full(8, -1.0), np.linspace(-1, 1, 8)]).astype(np.float32)
    _, _, _, _, info = env.step(np.concatenate([k_part, cap_part]))
    caps = info["cap_per_sample"]
    assert caps[:8] == pytest.approx(0.5 + 0.5 * 0.02) and caps[8] == pytest.approx(1 / 6 + 5 / 6 * 0.02)
    assert caps[-1] == 1.0 and np.all(np.diff(caps[8:]) > 0)  # the cap follows the action within 1/k .. 1
    assert (info["dominant_weight_per_sample"] <= caps + 1e-6).all()
    assert info["dominant_weight_per_sample"][:8] == pytest.approx(0.51, abs=1e-6)  # k = 2 at its lowest cap
    _, _, _, _, info = env.step(env.action_for_k(4))  # encoded actions leave the mixes uncapped
    assert (info["cap_per_sample"] == 1.0).all()
    with pytest.raises(ValueError, match="choose one, a fixed cap on every mix or one the action chooses"):
        FrequencyMixupEnv(**TINY, action_mode="sample_continuous", control_cap=True, max_weight=0.65)
    with pytest.raises(ValueError, match="control_cap=True needs a continuous action_mode"):
        FrequencyMixupEnv(**TINY, action_mode="sample_discrete", control_cap=True)


def test_per_sample_caps_in_the_mixing_function():
    x, y = torch.randn(6, 3), torch.arange(6) % 3
    caps = torch.tensor([1.0, 0.9, 0.6, 0.55, 0.51, 1.0], dtype=torch.float64)
    m = mix_batch(x, y, 2, 3, 1.0, torch.Generator().manual_seed(0), caps)
    assert (m.weights.max(1).values <= caps.float() + 1e-6).all()
    assert torch.allclose(m.weights.sum(1), torch.ones(6))
    with pytest.raises(ValueError, match=r"per-sample caps must be \(6,\), each in \(1/k, 1\]"):
        mix_batch(x, y, 2, 3, 1.0, torch.Generator().manual_seed(0), torch.full((6,), 0.4))
