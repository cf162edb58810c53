"""examples/train_fr.py --public-fraction -> examples/evaluate_privacy.py -> examples/pareto_report.py, end to end
on tiny settings, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_example
from fr_models import FRTrainer
from fr_models.data import load_faces

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--min-updates", "1", "--evaluator-epochs", "3", "--prior-epochs", "1", "--steps", "3", "--restarts", "2", "--views", "2",
        "--decoder-epochs", "1", "--unmix-epochs", "1", "--grid-identities", "3", "--no-progress"]


train_fr, evaluate_privacy = load_example("train_fr"), load_example("evaluate_privacy")
pareto_report = load_example("pareto_report")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Two tiny models on the synthetic faces with 30 % of the identities held out: undefended and fixed k=3."""
    root = tmp_path_factory.mktemp("privacy")
    out = {}
    for name, args in (("none", ["--defence", "none"]), ("fixed", ["--defence", "fixed", "--k", "3"])):
        train_fr.main([*args, "--public-fraction", "0.3", "--epochs", "2", "--batch-size", "32", "--no-progress",
                       "--out", str(root / name)])
        out[name] = root / name
    return out


def test_train_fr_holds_out_public_identities(trained) -> None:
    faces = load_faces("synthetic")
    split = np.load(trained["fixed"] / "split.npz")
    priv, pub = faces.labels[split["private_idx"]], faces.labels[split["public_idx"]]
    assert len(np.intersect1d(priv, pub)) == 0 and len(np.unique(pub)) == 6 and len(np.unique(priv)) == 14
    metrics = json.loads((trained["fixed"] / "metrics.json").read_text())
    assert metrics["num_identities"] == 14 and metrics["public_identities"] == 6
    model = FRTrainer.load(trained["fixed"] / "fr_model.pt")
    assert model.config.num_classes == 14
    meta = model.metadata
    assert meta["input"] == "masked_dct" and meta["defence"] == "fixed" and meta["k"] == 3
    assert meta["class_names"] == [faces.names[c] for c in np.unique(priv)]


def test_evaluate_privacy_runs_every_attack(trained, tmp_path, monkeypatch) -> None:
    seen = {}
    real_train = evaluate_privacy.train_evaluator

    def spy(images, labels, names, **kw):
        seen["images"], seen["names"] = images.clone(), list(names)
        return real_train(images, labels, names, **kw)

    monkeypatch.setattr(evaluate_privacy, "train_evaluator", spy)
    out = tmp_path / "fixed"
    report = evaluate_privacy.main(["--model", str(trained["fixed"] / "fr_model.pt"), "--data", "synthetic",
                                    "--attacks", *evaluate_privacy.ATTACKS, "--out", str(out), *TINY])
    # The evaluator saw exactly the private faces: none of a public identity.
    faces = load_faces("synthetic")
    split = np.load(trained["fixed"] / "split.npz")
    from fr_models.data import images_to_tensor

    assert torch.equal(seen["images"], images_to_tensor(faces.images[split["private_idx"]], 64))
    public_names = {faces.names[c] for c in np.unique(faces.labels[split["public_idx"]])}
    assert not public_names & set(seen["names"]) and len(seen["names"]) == 14
    saved = json.loads((out / "privacy.json").read_text())
    assert saved["privacy_score"] == pytest.approx(report["privacy_score"]) and 0 <= saved["privacy_score"] <= 1
    assert set(saved["attacks"]) == set(evaluate_privacy.ATTACKS)
    for name, m in saved["attacks"].items():
        assert {"top1", "top5", "knn_dist", "psnr", "ssim", "seconds", "peak_rss_mb"} <= set(m), name
        assert m["chance_top1"] == pytest.approx(1 / 14) and 0 <= m["top1"] <= m["top5"] <= 1
    assert saved["attacks"]["datalevel"]["k_values"] == [3]  # the model's own k
    assert saved["attacks"]["blackbox_scores"]["queries"] == 4 * saved["public_images"]
    assert saved["utility"]["top1"] >= 0 and (out / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "evaluator.pt").is_file()

    # A second model on the same split reuses the evaluator; the pixel model skips the data-level attack.
    report2 = evaluate_privacy.main(["--model", str(trained["none"] / "fr_model.pt"), "--data", "synthetic",
                                     "--evaluator", str(out / "evaluator.pt"), "--attacks", "blackbox_embeddings",
                                     "datalevel", "--out", str(tmp_path / "none"), *TINY])
    assert "skipped" in report2["attacks"]["datalevel"] and "top1" in report2["attacks"]["blackbox_embeddings"]
    # the exit code says whether anything was measured, and measured finitely (it was always 0)
    assert evaluate_privacy.exit_status(report) == 0 and evaluate_privacy.exit_status(report2) == 0
    skipped_only = {"attacks": {"datalevel": report2["attacks"]["datalevel"]}}
    assert evaluate_privacy.exit_status(skipped_only) == 1
    nan = {"attacks": {"blackbox_embeddings": {**report2["attacks"]["blackbox_embeddings"], "top1": float("nan")}}}
    assert evaluate_privacy.exit_status(nan) == 1

    points = pareto_report.main([str(out / "privacy.json"), str(tmp_path / "none" / "privacy.json"),
                                 "--out", str(tmp_path / "pareto.png")])
    assert [p["label"] for p in points] == ["fixed k=3 (masked_dct)", "none (pixel)"]
    assert (tmp_path / "pareto.png").is_file()


def test_evaluate_privacy_errors(trained, tmp_path) -> None:
    model = str(trained["fixed"] / "fr_model.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable FR model checkpoint"):
        evaluate_privacy.main(["--model", str(tmp_path / "junk.pt"), "--data", "synthetic", *TINY])
    split = np.load(trained["fixed"] / "split.npz")
    # A forced split whose public side shares identities with the private one.
    np.savez(tmp_path / "overlap.npz", private_idx=split["private_idx"], public_idx=split["private_idx"][:40])
    with pytest.raises(ValueError, match="on both the private and the public side"):
        evaluate_privacy.main(["--model", model, "--data", "synthetic", "--split", str(tmp_path / "overlap.npz"), *TINY])
    # A public side with a single identity: too few for the attacker.
    faces = load_faces("synthetic")
    one = np.flatnonzero(faces.labels == faces.labels[split["public_idx"][0]])
    np.savez(tmp_path / "one.npz", private_idx=split["private_idx"], public_idx=one)
    with pytest.raises(ValueError, match="public side has 1 identities, the attack needs at least 2"):
        evaluate_privacy.main(["--model", model, "--data", "synthetic", "--split", str(tmp_path / "one.npz"), *TINY])
    # A model trained on every identity leaves no public faces.
    np.savez(tmp_path / "nosplit.npz", train_idx=np.arange(10), test_idx=np.arange(10, 20))
    with pytest.raises(ValueError, match="retrain it with train_fr.py --public-fraction"):
        evaluate_privacy.main(["--model", model, "--data", "synthetic", "--split", str(tmp_path / "nosplit.npz"), *TINY])
    with pytest.raises(SystemExit):
        evaluate_privacy.main(["--model", model, "--steps", "0"])


def test_make_mix_draws_on_the_generator_device() -> None:
    """The data-level attack gives make_mix a generator on the faces' device; the draws must happen there."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 54, 4, 4)
    for weights in (None, [0.0, 1.0]):
        mixed, partners, w = evaluate_privacy.make_mix([2, 3], weights)(x, gen)
        assert mixed.shape == x.shape and partners.shape[0] == 6
        assert weights is None or (w > 0).sum(1).eq(3).all()  # k = 3 only
    if torch.cuda.is_available():
        gen = torch.Generator(device="cuda").manual_seed(0)
        for weights in (None, [1.0, 1.0]):
            mixed, _, _ = evaluate_privacy.make_mix([2, 3], weights)(x.cuda(), gen)
            assert mixed.device.type == "cuda"
