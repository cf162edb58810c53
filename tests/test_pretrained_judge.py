"""The pretrained judge (dlib's face recognizer, the ``judge`` extra): it needs the extra, which CI installs."""

import importlib.util
import os
import shutil

import numpy as np
import pytest
import torch

from privacy.attacks.pretrained import DLIB_MODELS, PretrainedJudge, dlib_model_files, load_dlib

HAVE_JUDGE = importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models") is not None
# in CI (the CI variable set, as .ci/run does) these tests never skip: a missing extra fails them
needs_judge = pytest.mark.skipif(not HAVE_JUDGE and not os.environ.get("CI"),
                                 reason='needs the judge extra: pip install -e ".[judge]" (CI installs it)')
needs_att = pytest.mark.skipif(not os.environ.get("MIXUP_ENV_DATA"), reason="needs real faces: set MIXUP_ENV_DATA")


@needs_judge
@needs_att
def test_the_judge_names_a_private_face_by_its_own_identity_on_real_faces():
    from fr_models.data import load_faces

    faces = load_faces("att_faces")
    ids = list(range(0, 40, 4))  # 10 identities, 4 gallery faces each, 2 probes each
    gal, probe = [], []
    for c in ids:
        idx = np.flatnonzero(faces.labels == c)
        gal += list(idx[:4])
        probe += list(idx[4:6])
    remap = {c: i for i, c in enumerate(ids)}

    def tensor(idx):
        return torch.from_numpy(faces.images[idx]).float().div(255).unsqueeze(1)

    judge = PretrainedJudge.enrol(tensor(gal), torch.tensor([remap[c] for c in faces.labels[gal]]),
                                  [faces.names[c] for c in ids])
    assert judge.num_classes == 10 and judge.gallery_features.shape == (40, 128)
    assert judge.val_accuracy >= 0.8  # leave-one-out on the gallery itself
    logits, feats = judge.logits_and_features(tensor(probe))
    truth = torch.tensor([remap[c] for c in faces.labels[probe]])
    assert float((logits.argmax(1) == truth).float().mean()) >= 0.85  # chance 0.1
    assert torch.allclose(feats, judge.features(tensor(probe)))  # deterministic
    # an image of noise is not close to anyone: farther from every centroid than the probes are from their own
    noise = torch.rand(3, 1, 112, 92, generator=torch.Generator().manual_seed(0))
    assert float(-judge.logits(noise).max()) > float(-logits.gather(1, truth.view(-1, 1)).median())


@needs_judge
def test_the_gallery_round_trips_and_its_key_changes_with_the_faces(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 1, 40, 40, generator=g), torch.tensor([0, 0, 1, 1])
    judge = PretrainedJudge.enrol(x, y, ["a", "b"])
    judge.save(tmp_path / "g.pt")
    back = PretrainedJudge.load(tmp_path / "g.pt")
    assert torch.equal(back.centroids, judge.centroids) and back.gallery_key == PretrainedJudge.key(x, y, ["a", "b"])
    assert PretrainedJudge.key(x.flip(0), y, ["a", "b"]) != back.gallery_key
    assert torch.allclose(back.logits(x), judge.logits(x))
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 10)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    for bad in ("other.pt", "junk.pt"):
        with pytest.raises(ValueError, match="not a pretrained judge's gallery"):
            PretrainedJudge.load(tmp_path / bad)
    with pytest.raises(ValueError, match="every identity 0..2 needs a gallery face"):
        PretrainedJudge.enrol(x, y, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"reads \(N, 1 or 3, H, W\)"):
        judge.features(torch.rand(2, 2, 40, 40))


@needs_judge
def test_a_model_file_that_is_not_dlibs_is_refused(tmp_path):
    files = dlib_model_files()
    for role, path in files.items():
        shutil.copy(path, tmp_path / path.name)
    assert dlib_model_files(tmp_path) == {r: tmp_path / p.name for r, p in files.items()}
    name = DLIB_MODELS["embedding"][0]
    (tmp_path / name).write_bytes(b"not a network")
    with pytest.raises(ValueError, match="is not dlib's dlib_face_recognition_resnet_model_v1.dat"):
        dlib_model_files(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(ValueError, match="is missing; reinstall the judge extra"):
        dlib_model_files(tmp_path)


def test_a_missing_extra_names_it(monkeypatch):
    import sys

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(ImportError, match=r'needs the "judge" extra: pip install "mixup-env\[judge\]"'):
        dlib_model_files()
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError
    with pytest.raises(ImportError, match=r'"judge" extra'):
        load_dlib()
    from privacy.evaluate import evaluate_privacy

    with pytest.raises(ImportError, match=r'"judge" extra'):
        evaluate_privacy("no_model.pt", "synthetic", judges=("pretrained", "evaluator"))
    with pytest.raises(ValueError, match="judges=\\['oracle'\\]: accepted one or more distinct of pretrained, evaluator"):
        evaluate_privacy("no_model.pt", "synthetic", judges=("oracle",))
