"""The online data-level attacker and the attack-aware reward (issue 17)."""

import numpy as np
import pytest
import torch

from fr_models.data import load_faces, split_identities
from mixup_env import FrequencyMixupEnv
from mixup_env.attacker import OnlineAttacker
from mixup_env.mixing import mix_batch
from mixup_env.prepared import transform_faces
from mixup_env.rewards import AttackAware, StepRecord
from mixup_env.transform import FrequencyMasking


@pytest.fixture(scope="module")
def split_faces():
    faces = load_faces("synthetic")
    private, public = split_identities(faces.labels, 0.3, 0)
    return faces.subset(private), faces.subset(public)


@pytest.fixture(scope="module")
def channels(split_faces):
    private, public = split_faces
    masking = FrequencyMasking()
    return transform_faces(private.images, masking, None), transform_faces(public.images, masking, None)


def _mean_leakage(attacker, faces, k, seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(4):
        x = faces[torch.randperm(len(faces), generator=g)[:n]]
        mix = mix_batch(x, torch.zeros(n, dtype=torch.long), k, 1, 1.0, g)
        out.append(attacker.leakage(x, mix.inputs, mix.partners, mix.weights))
    return float(torch.cat([o[0] for o in out]).mean()), float(torch.cat([o[1] for o in out]).mean())


def test_leakage_falls_as_k_grows_and_never_exceeds_much_the_unmixed(channels):
    private, public = channels
    leaks = []
    for k in (1, 2, 4, 6):
        attacker = OnlineAttacker(public, components=64)
        attacker.fit({k: 1.0}, generator=torch.Generator().manual_seed(1))
        leak, unmixed = _mean_leakage(attacker, private, k)
        leaks.append(leak)
    assert leaks[0] == pytest.approx(unmixed, abs=0.02)  # k = 1: the mix is the face, nothing prevented
    assert leaks[0] > leaks[1] > leaks[2] > leaks[3]
    assert 0 < leaks[3] < unmixed


def test_the_fitted_map_reconstructs_dominant_faces_better_than_the_mix_itself(channels):
    """The ridge map is fitted to the dominant face (squared error): on private mixes it is closer to them than the
    mixes are (by cosine, the leakage measure, the two are within a few hundredths: see the reward's docstring)."""
    private, public = channels
    attacker = OnlineAttacker(public, components=64)
    attacker.fit({4: 1.0}, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x = private[torch.randperm(len(private), generator=g)[:64]]
    mix = mix_batch(x, torch.zeros(64, dtype=torch.long), 4, 1, 1.0, g)
    dominant = x[mix.partners.gather(1, mix.weights.argmax(1, keepdim=True)).squeeze(1)]
    z, _ = attacker._coords(mix.inputs)
    t, _ = attacker._coords(dominant)
    assert float(((z @ attacker.weights - t) ** 2).sum()) < 0.98 * float(((z - t) ** 2).sum())  # measured 0.965


def test_leakage_is_the_best_reconstruction_of_any_mix_a_face_entered():
    g = torch.Generator().manual_seed(0)
    attacker = OnlineAttacker(torch.randn(50, 2, 4, 4, generator=g), components=8)
    faces = torch.randn(3, 2, 4, 4, generator=g)
    # mix 0 = faces 0 and 1, mix 1 = face 1 alone, mix 2 = face 2 alone: face 0 is only in mix 0
    mixes = torch.stack([0.5 * faces[0] + 0.5 * faces[1], faces[1], faces[2]])
    partners, weights = torch.tensor([[0, 1], [1, 0], [2, 0]]), torch.tensor([[0.5, 0.5], [1.0, 0.0], [1.0, 0.0]])
    leak, unmixed = attacker.leakage(faces, mixes, partners, weights)
    assert leak[1] == pytest.approx(unmixed[1], abs=1e-5) and leak[2] == pytest.approx(unmixed[2], abs=1e-5)
    z, n = attacker._coords(faces)
    zm, _ = attacker._coords(mixes[:1])
    expected = float((zm[0] / zm[0].norm()) @ z[0] / n[0])
    assert leak[0] == pytest.approx(max(0.0, expected), abs=1e-5)


def test_attacker_bad_input_is_named(channels):
    _, public = channels
    with pytest.raises(ValueError, match="at least 3 public faces"):
        OnlineAttacker(public[:2])
    with pytest.raises(ValueError, match="components=0 is invalid"):
        OnlineAttacker(public, components=0)
    with pytest.raises(ValueError, match="ridge=0 is invalid"):
        OnlineAttacker(public, ridge=0)
    with pytest.raises(ValueError, match="k_probs"):
        OnlineAttacker(public, components=4).fit({})
    with pytest.raises(ValueError, match="too few to simulate mixes of k = 8"):
        OnlineAttacker(public[:5], components=4).fit({8: 1.0})


def _env(split_faces, **kw):
    private, public = split_faces
    args = dict(data=private, attacker_faces=public, reward="attack_aware", validation_fraction=0.2, batch_size=16,
                episode_steps=8, eval_every=4, recipe="tiny", attacker_kwargs={"components": 32, "refit_every": 3})
    return FrequencyMixupEnv(**{**args, **kw})


def test_the_env_scores_leakage_refits_the_attacker_and_pays_for_leakage_prevented(split_faces):
    env = _env(split_faces, action_mode="sample_discrete")
    env.reset(seed=0)
    before = env.attacker.weights.clone()
    weights_seen = []
    for t in range(1, 7):
        _, reward, _, _, info = env.step(env.action_for_k([6] * 16))
        prevented = float(np.mean(info["leakage_unmixed_per_sample"] - info["leakage_per_sample"]))
        assert info["leakage_prevented"] == pytest.approx(prevented)
        assert info["reward_terms"]["privacy"] == pytest.approx(prevented)
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
        assert info["leakage_per_sample"].shape == (16,) and (info["leakage_per_sample"] <= 1).all()
        weights_seen.append(env.attacker.weights.clone())
    # refitted after steps 3 and 6 (on k = 6 only), not in between
    assert torch.equal(weights_seen[0], before) and torch.equal(weights_seen[1], before)
    assert not torch.equal(weights_seen[2], before) and torch.equal(weights_seen[2], weights_seen[4])
    assert not torch.equal(weights_seen[5], weights_seen[4])
    reference = OnlineAttacker(env.attacker.public, components=32, refit_every=3)
    reference.fit({6: 1.0}, 1.0, None, torch.Generator().manual_seed(0))  # another stream: a different simulation
    assert not torch.equal(reference.weights, weights_seen[2])


def test_attack_aware_env_is_deterministic_and_checkpoints(split_faces, tmp_path):
    actions = [0, 4, 2, 4, 1, 3]

    def run(env, steps):
        return [env.step(a)[1] for a in steps]

    a = _env(split_faces)
    a.reset(seed=5)
    ra = run(a, actions)
    b = _env(split_faces)
    b.reset(seed=5)
    rb = run(b, actions[:4])
    b.save_checkpoint(tmp_path / "env.pt")
    c = _env(split_faces)
    c.load_checkpoint(tmp_path / "env.pt")
    assert run(c, actions[4:]) == ra[4:] and rb == ra[:4]
    assert torch.equal(c.attacker.weights, a.attacker.weights)


def test_attack_aware_bad_input(split_faces):
    private, public = split_faces
    with pytest.raises(ValueError, match="reads leakage.*attacker_faces="):
        FrequencyMixupEnv(data=private, reward="attack_aware", validation_fraction=0.2, batch_size=16, recipe="tiny")
    with pytest.raises(ValueError, match="attacker_kwargs given without attacker_faces"):
        FrequencyMixupEnv(data=private, attacker_kwargs={"components": 8}, batch_size=16, recipe="tiny")
    with pytest.raises(ValueError, match="validation_fraction > 0"):
        FrequencyMixupEnv(data=private, attacker_faces=public, reward="attack_aware", batch_size=16, recipe="tiny")
    with pytest.raises(ValueError, match="utility='test' is invalid"):
        AttackAware(utility="test")
    record = StepRecord(mixed_loss=1.0, clean_loss=1.0, clean_loss_after=0.9, accuracy=0.0, evaluated=False,
                        k_mean=2.0, alpha_mean=1.0, step=0, episode_steps=1, num_classes=10)
    with pytest.raises(ValueError, match="attacker_faces"):
        AttackAware(utility="progress")(record)
    progress = StepRecord(**{**record.__dict__, "leakage": np.array([0.2, 0.4]),
                             "leakage_unmixed": np.array([0.5, 0.5])})
    terms = AttackAware(privacy=2.0, utility_weight=1.0, utility="progress")(progress)
    assert terms["privacy"] == pytest.approx(2 * 0.2) and terms["utility"] == pytest.approx(0.1 / np.log(10))
