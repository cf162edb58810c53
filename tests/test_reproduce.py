"""Issue 8: the standard defences (DP-SGD, negative label smoothing), the policy's k distribution in the data-level
attack, and examples/reproduce.py (resumable cells, a report regenerated from them, the verdict)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import load_example
from fr_models import FRConfig, FRTrainer, make_backbone
from fr_models.dp import fit_dp
from fr_models.heads import SoftmaxHead, targets_as_components

train_fr, evaluate_privacy = load_example("train_fr"), load_example("evaluate_privacy")
reproduce = load_example("reproduce")


# --- negative label smoothing ----------------------------------------------------------------------------------
def test_negative_smoothing_ramps_to_its_final_value_and_keeps_rows_summing_to_one():
    smooth = train_fr.negative_smoothing(-0.1, num_classes=4, updates=10)
    x, y = torch.randn(3, 2), torch.tensor([0, 1, 3])
    gen = torch.Generator()
    targets = [smooth(x, y, gen)[1] for _ in range(8)]
    assert torch.equal(targets[0], nn.functional.one_hot(y, 4).float())  # a = 0 at the start
    a = -0.1  # reached after updates / 2 = 5 calls, and kept
    expected = (1 - a) * nn.functional.one_hot(y, 4).float() + a / 4
    assert torch.allclose(targets[5], expected) and torch.allclose(targets[7], expected)
    assert torch.allclose(targets[2], (1 + 0.04) * nn.functional.one_hot(y, 4).float() - 0.04 / 4)
    assert all(torch.allclose(t.sum(1), torch.ones(3)) for t in targets)
    assert (targets[5] < 0).sum() == 9 and smooth(x, y, gen)[0] is x  # the faces are left as they are


def test_soft_labels_with_negative_entries_give_the_soft_cross_entropy():
    head = SoftmaxHead(8, 5)
    emb = torch.randn(6, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    t = 1.05 * nn.functional.one_hot(y, 5).float() - 0.05 / 5
    expected = -(t * torch.log_softmax(head.logits(emb), 1)).sum(1)
    assert torch.allclose(head(emb, t), expected, atol=1e-5)
    # a sparse row with a negative entry keeps it (by magnitude), not only the positive ones
    sparse = torch.zeros(1, 5)
    sparse[0, 1], sparse[0, 3] = 1.2, -0.2
    classes, weights = targets_as_components(sparse, 5)
    assert sorted(classes[0].tolist()) == [1, 3] and sorted(weights[0].tolist()) == pytest.approx([-0.2, 1.2])


# --- DP-SGD ----------------------------------------------------------------------------------------------------
def test_group_norm_backbone_has_no_batch_statistics_and_round_trips(tmp_path):
    bb = make_backbone("grid", 6, (4, 4), 16, (8, 8), norm="group")
    kinds = {type(m) for m in bb.modules()}
    assert nn.GroupNorm in kinds and not kinds & {nn.BatchNorm1d, nn.BatchNorm2d}
    assert not any(m.inplace for m in bb.modules() if isinstance(m, nn.ReLU))
    bb.eval()
    x = torch.randn(3, 6, 4, 4)
    assert torch.allclose(bb(x)[:1], bb(x[:1]), atol=1e-5)  # per-sample: no sample sees another
    t = FRTrainer(FRConfig(6, (4, 4), 3, embedding_dim=16, widths=(8, 8), norm="group"), seed=0)
    t.save(tmp_path / "g.pt")
    back = FRTrainer.load(tmp_path / "g.pt")
    assert back.config.norm == "group" and isinstance(back.backbone.features[0][1], nn.GroupNorm)
    with pytest.raises(ValueError, match="unknown norm 'layer'; accepted: batch, group"):
        make_backbone("grid", 6, (4, 4), 16, norm="layer")


def test_opacus_per_sample_gradients_match_autograd_on_the_group_norm_model():
    from opacus import GradSampleModule

    from fr_models.dp import _Loss

    t = FRTrainer(FRConfig(6, (4, 4), 4, embedding_dim=16, widths=(8, 8), norm="group"), seed=0)
    module = GradSampleModule(_Loss(t), loss_reduction="mean")
    x, y = torch.randn(16, 6, 4, 4, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 4
    module(x, y).mean().backward()
    # the mean of the per-sample gradients is the batch gradient (wrong on channels-last convolutions)
    for name, p in module.named_parameters():
        assert torch.allclose(p.grad_sample.mean(0), p.grad, atol=1e-6), name


def _dp_data():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(96, 6, 4, 4, generator=g) + 2 * nn.functional.one_hot(y, 6).float().view(96, 6, 1, 1)
    return x, y


def _dp_trainer(norm: str = "group", lr: float = 1e-3) -> FRTrainer:
    return FRTrainer(FRConfig(6, (4, 4), 4, embedding_dim=16, widths=(8, 8), norm=norm, lr=lr), seed=0)


def test_fit_dp_is_deterministic_accounts_privacy_and_leaves_a_plain_model():
    x, y = _dp_data()
    a, b = _dp_trainer(), _dp_trainer()
    ra = fit_dp(a, x, y, epochs=2, batch_size=16, seed=3, noise_multiplier=1.0)
    rb = fit_dp(b, x, y, epochs=2, batch_size=16, seed=3, noise_multiplier=1.0)
    assert all(torch.equal(p, q) for p, q in zip(a.backbone.state_dict().values(), b.backbone.state_dict().values()))
    assert ra["epsilon"] == rb["epsilon"] > 0 and ra["sample_rate"] == pytest.approx(16 / 96)
    assert 10 <= ra["updates"] <= 12  # 2 epochs of 96 // 16 Poisson batches (an empty one is skipped)
    more = fit_dp(_dp_trainer(), x, y, epochs=4, batch_size=16, seed=3, noise_multiplier=1.0)
    noisier = fit_dp(_dp_trainer(), x, y, epochs=2, batch_size=16, seed=3, noise_multiplier=3.0)
    assert more["epsilon"] > ra["epsilon"] > noisier["epsilon"]  # longer training spends more, more noise less
    # Opacus's hooks are gone: no per-sample gradient buffers, and the plain training step works again
    assert not any(hasattr(p, "grad_sample") for p in a.backbone.parameters())
    assert torch.isfinite(a.train_step(x[:8], y[:8])).all()


def test_fit_dp_with_negligible_noise_learns_and_refuses_batch_norm():
    x, y = _dp_data()
    t = _dp_trainer(lr=1e-2)
    before = t.accuracy(x, y)
    r = fit_dp(t, x, y, epochs=10, batch_size=16, noise_multiplier=1e-3, max_grad_norm=10.0)
    assert t.accuracy(x, y) > max(before, 0.6) and r["epoch_losses"][-1] < r["epoch_losses"][0]
    with pytest.raises(ValueError, match="without batch norm.*norm='group'"):
        fit_dp(_dp_trainer("batch"), x, y, epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="noise_multiplier > 0"):
        fit_dp(t, x, y, epochs=1, batch_size=16, noise_multiplier=0.0)


@pytest.mark.parametrize("defence,extra", [("dpsgd", ["--noise-multiplier", "1.0"]), ("nls", ["--smoothing", "-0.1"]),
                                           ("fixed", ["--k", "2"])])
def test_train_fr_standard_defences_train_as_many_updates_on_all_channels(tmp_path, defence, extra):
    m = train_fr.main(["--defence", defence, *extra, "--epochs", "2", "--batch-size", "32", "--no-progress",
                       "--out", str(tmp_path / defence)])
    full = 2 * (640 // 32)  # 2 epochs of the 640 training faces in batches of 32
    assert (full - 2 <= m["updates"] <= full) if defence == "dpsgd" else m["updates"] == full  # DP: empty batches
    model = FRTrainer.load(tmp_path / defence / "fr_model.pt")
    assert model.config.in_channels == (64 if defence in ("dpsgd", "nls") else 54)  # no mask on the baselines
    assert model.config.norm == ("group" if defence == "dpsgd" else "batch")
    if defence == "dpsgd":
        assert m["dp"]["epsilon"] > 0 and m["dp"]["delta"] == 1e-5


def test_split_seed_keeps_the_private_identities_across_training_seeds(tmp_path):
    private = {}
    for seed, split_seed in ((0, 0), (1, 0), (1, None)):
        out = tmp_path / f"s{seed}_{split_seed}"
        extra = [] if split_seed is None else ["--split-seed", str(split_seed)]
        train_fr.main(["--defence", "mask", "--public-fraction", "0.3", "--epochs", "1", "--batch-size", "32",
                       "--seed", str(seed), *extra, "--no-progress", "--out", str(out)])
        with np.load(out / "split.npz") as z:
            private[(seed, split_seed)] = z["private_idx"]
    assert np.array_equal(private[(0, 0)], private[(1, 0)])  # reproduce.py's seeds share one private split
    assert not np.array_equal(private[(0, 0)], private[(1, None)])  # by default the split follows --seed


def test_train_fr_refuses_positive_smoothing(capsys):
    with pytest.raises(SystemExit):
        train_fr.parse_args(["--defence", "nls", "--smoothing", "0.1"])
    assert "--smoothing must lie in (-1, 0)" in capsys.readouterr().err


# --- the data-level attack simulates the policy as it ran --------------------------------------------------------
def test_data_level_mix_follows_the_recorded_k_distribution():
    meta = {"defence": "policy", "k_values": [2, 3, 6], "k_distribution": {"2": 0.0, "3": 0.0, "6": 1.0}}
    ks = evaluate_privacy.data_level_k(meta, None)
    weights = evaluate_privacy.data_level_weights(meta, ks)
    assert ks == [2, 3, 6] and weights == [0.0, 0.0, 1.0]
    assert evaluate_privacy.data_level_weights({"defence": "random"}, [2, 3]) is None
    mix = evaluate_privacy.make_mix(ks, weights)
    x = torch.rand(40, 1, 8, 8)
    _, partners, w = mix(x, torch.Generator().manual_seed(0))
    assert ((w > 0).sum(1) == 6).all()  # every face mixed with 5 others, as the policy did
    uniform = evaluate_privacy.make_mix([2, 3])
    assert set(((uniform(x, torch.Generator().manual_seed(0))[2] > 0).sum(1)).tolist()) == {2, 3}
    with pytest.raises(ValueError, match="one non-negative weight per k"):
        evaluate_privacy.make_mix([2, 3], [1.0])


def test_judge_min_updates_defaults_to_min_updates_and_is_checked(capsys):
    args = evaluate_privacy.parse_args(["--model", "m.pt", "--min-updates", "7"])
    assert args.judge_min_updates == 7
    assert evaluate_privacy.parse_args(["--model", "m.pt", "--judge-min-updates", "600"]).judge_min_updates == 600
    with pytest.raises(SystemExit):
        evaluate_privacy.parse_args(["--model", "m.pt", "--judge-min-updates", "0"])
    assert "--judge-min-updates must be >= 1" in capsys.readouterr().err


# --- reproduce.py ----------------------------------------------------------------------------------------------
TINY_ATTACKS = {"identities": 3, "steps": 2, "restarts": 1, "views": 1, "decoder_epochs": 1, "unmix_epochs": 1,
                "min_updates": 1, "evaluator_epochs": 1, "prior_epochs": 1}


@pytest.fixture()
def tiny(monkeypatch, tmp_path):
    monkeypatch.setattr(reproduce, "QUICK_ATTACKS", TINY_ATTACKS)
    monkeypatch.setattr(reproduce, "QUICK_AGENT", {"timesteps": 4, "episode_steps": 4})
    monkeypatch.setitem(reproduce.DATASETS, "synthetic", {"image_size": None, "public_fraction": 0.3, "epochs": 1})
    return ["--quick", "--datasets", "synthetic", "--seeds", "0", "--no-progress", "--work", str(tmp_path / "work")]


def test_reproduce_runs_cells_resumes_and_regenerates_the_report(tiny, tmp_path, monkeypatch):
    report = reproduce.main([*tiny, "--defences", "mask", "fixed2", "reinforce"])
    cells = sorted((tmp_path / "work" / "quick" / "cells").glob("*.json"))
    assert [c.name for c in cells] == ["synthetic__fixed2__s0.json", "synthetic__mask__s0.json",
                                       "synthetic__reinforce__s0.json"]
    cell = json.loads(cells[0].read_text())
    assert set(cell["attacks"]) == set(reproduce.ATTACKS) and 0 <= cell["privacy_all"] <= cell["privacy_model"] <= 1
    updates = {json.loads(c.read_text())["utility"]["updates"] for c in cells}
    assert len(updates) == 1 and updates.pop() > 0 and cell["settings"]["defence"] == "fixed2"  # same updates
    side = reproduce.THUMB
    assert reproduce.decode_thumbnails(cell["thumbnails"]["whitebox_vae"]).shape == (3, side, side)
    policy = json.loads(cells[2].read_text())
    assert sum(policy["k_distribution"].values()) == pytest.approx(1.0) and 2 <= policy["mean_k"] <= 6
    assert all(c.stat().st_size < 30_000 for c in cells)  # small files, fit for the repository

    text = report.read_text()
    top1 = f"{cell['utility']['top1']:.3f}"
    assert f"| fixed2 | 1 | {top1} |" in text and "**Verdict**" in text and "reinforce" in text
    assert (report.parent / "img" / "results_pareto_synthetic.png").stat().st_size > 1000

    # resumable: a second run computes nothing ...
    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(reproduce, "run_cell", boom)
    reproduce.main([*tiny, "--defences", "mask", "fixed2", "reinforce"])
    # ... the report is rewritten from the cells alone, with the same figures ...
    report.unlink()
    reproduce.main([*tiny, "--report-only"])
    assert f"| fixed2 | 1 | {top1} |" in report.read_text()
    # ... and a cell computed under other settings is not taken as finished
    with pytest.raises(AssertionError, match="recomputed"):
        reproduce.main([*tiny, "--defences", "mask", "--epochs", "2"])


def test_reproduce_report_needs_cells_and_rejects_unknown_data(tiny, capsys):
    with pytest.raises(FileNotFoundError, match="no finished cells"):
        reproduce.main([*tiny, "--report-only"])
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--datasets", "celeba"])
    assert "unknown data set(s) ['celeba']" in capsys.readouterr().err


def _cell(defence: str, seed: int, top1: float, privacy: float, dist: dict[str, float] | None = None) -> dict:
    c = {"settings": {"data": "d", "defence": defence, "seed": seed}, "utility": {"top1": top1},
         "privacy_model": privacy, "privacy_all": privacy}
    if dist:
        c["k_distribution"] = dist
        c["mean_k"] = sum(int(k) * p for k, p in dist.items())
    return c


def test_verdict_names_dominated_defences_and_compares_policies_at_matched_accuracy():
    cells = []
    for seed in (0, 1, 2):
        e = 0.002 * seed
        cells += [_cell("none", seed, 0.60 + e, 0.10 + e), _cell("fixed2", seed, 0.40 + e, 0.50 + e),
                  _cell("fixed6", seed, 0.25 + e, 0.80 + e), _cell("mask", seed, 0.40 + e, 0.30 + e),
                  _cell("reinforce", seed, 0.255 + e, 0.795 + e, {"6": 0.97, "2": 0.03}),
                  _cell("ppo", seed, 0.405 + e, 0.70 + e, {"3": 0.6, "4": 0.4})]
    lines = reproduce.verdict("d", reproduce.summarise(cells)["d"])
    text = "\n".join(lines)
    assert "**Dominated**: mask, fixed2." in text  # ppo is more accurate than fixed2 and more private
    assert "**reinforce** (top-1 0.257, privacy 0.797) **does not beat**: it ties" in lines[2]
    assert "accuracy, fixed6 (top-1 0.252, privacy 0.802" in lines[2]
    assert "collapsed to one k: k = 6 for 97% of the faces" in lines[2]
    assert "**ppo** (top-1 0.407, privacy 0.702) **beats** the best fixed k at matched accuracy, fixed2" in lines[3]
