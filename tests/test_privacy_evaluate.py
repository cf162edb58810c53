"""privacy.evaluate (and privacy.report's frontier): train with a public share held out, attack, judge, on tiny
settings, and the errors; the scripts over them are run in tests/test_examples.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import privacy.evaluate
from fr_models import FRTrainer
from fr_models.card import ModelCard
from fr_models.data import load_faces
from privacy.attacks import ATTACKS, defence_mix
from privacy.evaluate import AttackBudget, data_level_k, data_level_weights, evaluate_privacy, exit_status
from privacy.report import load_point, pareto_dominated

TINY = AttackBudget(min_updates=1, evaluator_epochs=3, prior_epochs=1, steps=3, restarts=2, views=2, decoder_epochs=1,
                    unmix_epochs=1, grid_identities=3)


def test_train_fr_holds_out_public_identities(private_models) -> None:
    faces = load_faces("synthetic")
    split = np.load(private_models["fixed"] / "split.npz")
    priv, pub = faces.labels[split["private_idx"]], faces.labels[split["public_idx"]]
    assert len(np.intersect1d(priv, pub)) == 0 and len(np.unique(pub)) == 6 and len(np.unique(priv)) == 14
    metrics = json.loads((private_models["fixed"] / "metrics.json").read_text())
    assert metrics["num_identities"] == 14 and metrics["public_identities"] == 6
    model = FRTrainer.load(private_models["fixed"] / "fr_model.pt")
    assert model.config.num_classes == 14
    card = model.card
    assert card.input == "masked_dct" and card.defence == "fixed" and card.k == 3 and card.image_size == (64, 64)
    assert card.class_names == tuple(faces.names[c] for c in np.unique(priv))


def test_evaluate_privacy_runs_every_attack(private_models, tmp_path, monkeypatch) -> None:
    seen = {}
    real_train = privacy.evaluate.train_evaluator

    def spy(images, labels, names, **kw):
        seen["images"], seen["names"] = images.clone(), list(names)
        return real_train(images, labels, names, **kw)

    monkeypatch.setattr(privacy.evaluate, "train_evaluator", spy)
    out = tmp_path / "fixed"
    report = evaluate_privacy(private_models["fixed"] / "fr_model.pt", "synthetic", ATTACKS, TINY, out=out, progress=False,
                              judges=("evaluator",))
    # The evaluator saw exactly the private faces: none of a public identity.
    faces = load_faces("synthetic")
    split = np.load(private_models["fixed"] / "split.npz")
    from fr_models.data import images_to_tensor

    assert torch.equal(seen["images"], images_to_tensor(faces.images[split["private_idx"]], 64))
    public_names = {faces.names[c] for c in np.unique(faces.labels[split["public_idx"]])}
    assert not public_names & set(seen["names"]) and len(seen["names"]) == 14
    saved = json.loads((out / "privacy.json").read_text())
    assert saved["privacy_score"] == pytest.approx(report["privacy_score"]) and 0 <= saved["privacy_score"] <= 1
    assert set(saved["attacks"]) == set(ATTACKS)
    for name, m in saved["attacks"].items():
        assert {"top1", "top5", "knn_dist", "psnr", "ssim", "seconds", "peak_rss_mb"} <= set(m), name
        assert m["chance_top1"] == pytest.approx(1 / 14) and 0 <= m["top1"] <= m["top5"] <= 1
    assert saved["attacks"]["datalevel"]["k_values"] == [3]  # the model's own k
    cluster = saved["attacks"]["datalevel_cluster"]  # the whole training run's encodings, clustered per face
    assert cluster["k_values"] == [3] and cluster["observed_epochs"] == TINY.observed_epochs
    assert cluster["clusters"] >= 2 and 0 < cluster["cluster_purity"] <= 1
    for m in saved["attacks"].values():  # at most judged_per_identity reconstructions judged per identity
        assert m["num_reconstructions"] <= TINY.judged_per_identity * m["attacked_identities"]
    assert saved["attacks"]["datalevel"]["made"] > saved["attacks"]["datalevel"]["judged"]
    assert saved["attacks"]["blackbox_scores"]["queries"] == 4 * saved["public_images"]
    assert saved["utility"]["top1"] >= 0 and (out / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"
    grid = saved["grid"]  # the picture's rows, and the judge's verdict on each shown reconstruction
    assert grid["judge"] == "evaluator" and len(grid["identities"]) == 3
    assert set(grid["verdicts"]) == set(ATTACKS) and all(v == "" or v[:2] in ("= ", "≠ ")
                                                           for vs in grid["verdicts"].values() for v in vs)
    assert (out / "evaluator.pt").is_file()

    # A second model on the same split reuses the evaluator; the pixel model skips the data-level attack.
    report2 = evaluate_privacy(private_models["none"] / "fr_model.pt", "synthetic", ["blackbox_embeddings", "datalevel"], TINY,
                               evaluator=out / "evaluator.pt", out=tmp_path / "none", progress=False,
                               judges=("evaluator",))
    assert "skipped" in report2["attacks"]["datalevel"] and "top1" in report2["attacks"]["blackbox_embeddings"]
    # the exit code says whether anything was measured, and measured finitely (it was always 0)
    assert exit_status(report) == (0, "") and exit_status(report2) == (0, "")
    skipped_only = {"attacks": {"datalevel": report2["attacks"]["datalevel"]}}
    assert exit_status(skipped_only) == (1, "no attack measured anything (every one was skipped)")
    nan = {"attacks": {"blackbox_embeddings": {**report2["attacks"]["blackbox_embeddings"], "top1": float("nan")}}}
    assert exit_status(nan) == (1, "non-finite figures from blackbox_embeddings")

    points = [load_point(out / "privacy.json"), load_point(tmp_path / "none" / "privacy.json")]
    assert [p["label"] for p in points] == ["fixed k=3 (masked_dct)", "none (pixel)"]
    assert len(pareto_dominated([(p["accuracy"], p["privacy"]) for p in points])) == 2


def test_evaluate_privacy_errors(private_models, tmp_path) -> None:
    model = private_models["fixed"] / "fr_model.pt"

    def run(split, model=model, attacks=ATTACKS):
        return evaluate_privacy(model, "synthetic", attacks, TINY, split=split, out=tmp_path / "out", progress=False,
                                judges=("evaluator",))

    (tmp_path / "junk.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable FR model checkpoint"):
        run(None, model=tmp_path / "junk.pt")
    with pytest.raises(ValueError, match=r"unknown attack\(s\) \['gan'\]: accepted whitebox_vae"):
        run(None, attacks=["gan"])
    split = np.load(private_models["fixed"] / "split.npz")
    # A forced split whose public side shares identities with the private one.
    np.savez(tmp_path / "overlap.npz", private_idx=split["private_idx"], public_idx=split["private_idx"][:40])
    with pytest.raises(ValueError, match="on both the private and the public side"):
        run(tmp_path / "overlap.npz")
    # A public side with a single identity: too few for the attacker.
    faces = load_faces("synthetic")
    one = np.flatnonzero(faces.labels == faces.labels[split["public_idx"][0]])
    np.savez(tmp_path / "one.npz", private_idx=split["private_idx"], public_idx=one)
    with pytest.raises(ValueError, match="public side has 1 identities, the attack needs at least 2"):
        run(tmp_path / "one.npz")
    # A model trained on every identity leaves no public faces.
    np.savez(tmp_path / "nosplit.npz", train_idx=np.arange(10), test_idx=np.arange(10, 20))
    with pytest.raises(ValueError, match="retrain it with train_fr.py --public-fraction"):
        run(tmp_path / "nosplit.npz")
    with pytest.raises(ValueError, match="attack budget: steps must be >= 1, got 0"):
        AttackBudget(steps=0)
    with pytest.raises(ValueError, match="attack budget: identities must be >= 2, got 1"):
        AttackBudget(identities=1)


def test_interrupted_run_redoes_only_unfinished_attacks(private_models, tmp_path, monkeypatch, capsys) -> None:
    """Each finished attack is kept under out/attacks; a rerun reuses it (same figures) and computes the rest; an
    entry of another budget, or a truncated one, is recomputed, never read."""
    model = private_models["fixed"] / "fr_model.pt"
    kw = dict(out=tmp_path / "out", progress=False, judges=("evaluator",))
    first = evaluate_privacy(model, "synthetic", ["blackbox_embeddings", "datalevel"], TINY, **kw)
    kept = sorted(p.name for p in (tmp_path / "out" / "attacks").iterdir())
    assert kept == ["blackbox_embeddings.pt", "datalevel.pt"]
    calls = []
    real_run = privacy.evaluate._Attacker.run
    monkeypatch.setattr(privacy.evaluate._Attacker, "run", lambda self, a: calls.append(a) or real_run(self, a))
    capsys.readouterr()
    again = evaluate_privacy(model, "synthetic", ["blackbox_embeddings", "datalevel", "blackbox_scores"], TINY, **kw)
    assert calls == ["blackbox_scores"] and "blackbox_embeddings: reused from" in capsys.readouterr().out
    for a in ("blackbox_embeddings", "datalevel"):
        as_text = [json.dumps(r["attacks"][a], sort_keys=True, default=float) for r in (again, first)]
        assert as_text[0] == as_text[1]
    # each attack from its own seed: computed alone, or after others, it gives the same figures
    alone = evaluate_privacy(model, "synthetic", ["blackbox_scores"], TINY, **{**kw, "out": tmp_path / "alone"})
    assert alone["attacks"]["blackbox_scores"]["top1"] == again["attacks"]["blackbox_scores"]["top1"]
    knn = [r["attacks"]["blackbox_scores"]["knn_dist"] for r in (alone, again)]
    assert knn[0] == pytest.approx(knn[1])
    calls.clear()
    evaluate_privacy(model, "synthetic", ["datalevel"], dataclasses.replace(TINY, unmix_epochs=2), **kw)
    assert calls == ["datalevel"]  # another budget: not reused
    (tmp_path / "out" / "attacks" / "blackbox_scores.pt").write_bytes(b"PK\x03\x04 cut short")
    calls.clear()
    evaluate_privacy(model, "synthetic", ["blackbox_scores"], TINY, **kw)
    assert calls == ["blackbox_scores"]


def test_defence_mix_draws_on_the_generator_device() -> None:
    """The data-level attack gives the mix a generator on the faces' device; the draws must happen there."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 54, 4, 4)
    for weights in (None, [0.0, 1.0]):
        mixed, partners, w = defence_mix([2, 3], weights)(x, gen)
        assert mixed.shape == x.shape and partners.shape[0] == 6
        assert weights is None or (w > 0).sum(1).eq(3).all()  # k = 3 only
    if torch.cuda.is_available():
        gen = torch.Generator(device="cuda").manual_seed(0)
        for weights in (None, [1.0, 1.0]):
            mixed, _, _ = defence_mix([2, 3], weights)(x.cuda(), gen)
            assert mixed.device.type == "cuda"


def test_data_level_mix_follows_the_recorded_k_distribution():
    card = ModelCard(input="masked_dct", defence="policy", k_values=(2, 3, 6),
                     k_distribution={"2": 0.0, "3": 0.0, "6": 1.0})
    ks = data_level_k(card)
    weights = data_level_weights(card, ks)
    assert ks == [2, 3, 6] and weights == [0.0, 0.0, 1.0]
    assert data_level_weights(ModelCard(input="masked_dct", defence="random"), [2, 3]) is None
    assert data_level_k(ModelCard(input="pixel")) is None and data_level_k(ModelCard(input="masked_dct")) == [1]
    assert data_level_k(ModelCard(input="masked_dct", defence="fixed", k=4)) == [4]
    mix = defence_mix(ks, weights)
    x = torch.rand(40, 1, 8, 8)
    _, partners, w = mix(x, torch.Generator().manual_seed(0))
    assert ((w > 0).sum(1) == 6).all()  # every face mixed with 5 others, as the policy did
    uniform = defence_mix([2, 3])
    assert set(((uniform(x, torch.Generator().manual_seed(0))[2] > 0).sum(1)).tolist()) == {2, 3}
    with pytest.raises(ValueError, match="one non-negative weight per k"):
        defence_mix([2, 3], [1.0])


def test_prior_ceilings_score_the_private_faces_through_each_prior() -> None:
    """A prior that keeps each face scores the judge's own accuracy; one that maps every face to the same image
    scores one identity's share; only the first judged_per_identity faces of each identity are judged."""
    from privacy.evaluate import _Attacker, _prior_ceilings

    y = torch.arange(4).repeat_interleave(3)  # 4 identities x 3 faces, face value = identity / 10
    x = (y.float() / 10).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()

    class Judge:
        seen = 0

        def logits(self, images):
            Judge.seen += len(images)
            return -(images.mean(dim=(1, 2, 3)).view(-1, 1) - torch.arange(4).float().view(1, -1) / 10).abs()

    class Keep:
        def encode(self, images):
            return images

        def decode(self, z):
            return z

    class Collapse(Keep):
        def decode(self, z):
            return torch.full_like(z, 0.1)  # identity 1's face

    attacker = _Attacker(None, x, [], x, y, torch.arange(4), dataclasses.replace(TINY, judged_per_identity=2),
                         Path("unused"), 0, "cpu", False)
    attacker._priors = {"vae": Keep(), "eigenface": Collapse()}
    panel = {"pretrained": (Judge(), None)}
    out = _prior_ceilings(attacker, ["whitebox_vae", "whitebox_eigenface", "whitebox_pixels", "datalevel"], panel)
    assert out == {"vae": {"pretrained": 1.0}, "eigenface": {"pretrained": 0.25}}
    assert Judge.seen == 2 * 4 * 2  # two priors, 4 identities x the first 2 faces


def test_model_digest_sees_the_weights_not_the_save(tmp_path) -> None:
    """The same weights saved twice (atomic saves: another temporary name, another serialization id) digest alike,
    so a retrained but identical model reuses its finished attacks; one changed weight does not."""
    from fr_models.trainer import atomic_torch_save
    from privacy.evaluate import model_digest

    state = {"w": torch.arange(6.0).view(2, 3), "card": {"defence": "none"}}
    a, b = atomic_torch_save(state, tmp_path / "a.pt"), atomic_torch_save(state, tmp_path / "b" / "fr_model.pt")
    assert a.read_bytes() != b.read_bytes() and model_digest(a) == model_digest(b)
    state["w"][0, 0] = 0.5
    assert model_digest(atomic_torch_save(state, tmp_path / "c.pt")) != model_digest(a)
    (tmp_path / "d.pt").write_bytes(b"not a zip")
    assert model_digest(tmp_path / "d.pt") != model_digest(a)


def test_the_eigenface_prior_takes_the_budgets_basis_size() -> None:
    """eigen_components sets the basis, capped at what the public faces (and their mirror images) span."""
    from privacy.evaluate import _Attacker

    x = torch.rand(30, 1, 8, 8)
    for want, got in ((10, 10), (1000, 59)):
        attacker = _Attacker(None, x, [], x, torch.zeros(30, dtype=torch.long), torch.arange(1),
                             dataclasses.replace(TINY, eigen_components=want), Path("unused"), 0, "cpu", False)
        assert attacker.prior("eigenface").latent_dim == got
    assert AttackBudget().eigen_components == 1000 and "eigen_components" in AttackBudget().as_dict()


def test_the_budgets_whitebox_loss_reaches_the_whitebox_attacks(monkeypatch) -> None:
    """whitebox_loss (default: the max-margin objective) is the objective each white-box attack optimises; an
    objective invert does not know is refused when the budget is made."""
    import privacy.evaluate as ev

    class Called(Exception):
        pass

    seen = []

    def invert(*args, **kw):
        seen.append(kw["loss"])
        raise Called

    monkeypatch.setattr(ev, "invert", invert)
    x = torch.rand(30, 1, 8, 8)
    for loss in ("margin", "ce"):
        attacker = ev._Attacker(None, x, [], x, torch.zeros(30, dtype=torch.long), torch.arange(1),
                                dataclasses.replace(TINY, whitebox_loss=loss), Path("unused"), 0, "cpu", False)
        for attack in ("whitebox_pixels", "whitebox_eigenface"):  # without a prior and with one
            with pytest.raises(Called):
                attacker.run(attack)
    assert seen == ["margin", "margin", "ce", "ce"] and AttackBudget().whitebox_loss == "margin"
    assert AttackBudget().as_dict()["whitebox_loss"] == "margin"  # part of every cell's settings hash
    with pytest.raises(ValueError, match=r"whitebox_loss must be one of \['margin', 'ce'\], got 'hinge'"):
        AttackBudget(whitebox_loss="hinge")
