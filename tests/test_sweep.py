"""privacy.sweep: DP-SGD's noise lowered until its models learn above the majority class, each point kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import privacy.sweep
from privacy.defences import DefenceSpec
from privacy.grid import CellStore, DataSettings, GridConfig
from privacy.sweep import compared_point, compared_spec, sweep_dpsgd, sweep_name


def config(tmp_path, epochs: int = 3) -> GridConfig:
    return GridConfig(("synthetic",), ("none",), (0,), work=tmp_path / "work", recipe="tiny", progress=False,
                      data_settings={"synthetic": DataSettings(None, 0.3, epochs)}, judges=("evaluator",))


def test_the_sweep_stops_at_the_first_noise_that_learns_and_resumes(tmp_path, monkeypatch) -> None:
    store = CellStore(tmp_path / "sweep")
    points = sweep_dpsgd(config(tmp_path), "synthetic", store, noise=(0.05, 1000.0, 0.01))
    # largest noise first; z = 1000 drowns every gradient (no better than always answering one identity) ...
    assert [p["noise_multiplier"] for p in points] == [1000.0, 0.05]  # ... and 0.01 is never trained
    drowned, learnt = points
    assert not drowned["learns"] and drowned["top1_interval"][0] <= drowned["chance"]["majority_class"]
    assert learnt["learns"] and learnt["top1_interval"][0] > learnt["chance"]["majority_class"]
    assert drowned["epsilon"] < learnt["epsilon"]  # less noise, a weaker guarantee
    for p in points:
        assert p["top1_interval"][0] <= p["top1"] <= p["top1_interval"][1] and p["test_images"] > 0
    assert compared_point(points) is learnt
    spec = compared_spec(points)
    assert spec.name == "dpsgd" and spec.noise_multiplier == 0.05 and spec.max_grad_norm == 1.0
    files = sorted(f.name for f in store.root.iterdir())
    assert files == [f"synthetic__{sweep_name(0.05)}__s0.json", f"synthetic__{sweep_name(1000.0)}__s0.json"]
    assert json.loads((store.root / files[0]).read_text())["top1"] == learnt["top1"]

    def boom(*a, **k):
        raise AssertionError("a finished point was retrained")

    monkeypatch.setattr(privacy.sweep, "train_cell_model", boom)
    assert sweep_dpsgd(config(tmp_path), "synthetic", store, noise=(0.05, 1000.0, 0.01)) == points
    with pytest.raises(AssertionError, match="retrained"):  # other training settings: not reused
        sweep_dpsgd(config(tmp_path, epochs=2), "synthetic", store, noise=(1000.0,))


def test_no_learning_point_and_bad_input() -> None:
    assert compared_point([{"noise_multiplier": 1.0, "learns": False, "top1": 0.2}]) is None
    assert compared_spec([{"noise_multiplier": 1.0, "learns": False, "top1": 0.2}]) is None
    with pytest.raises(ValueError, match="noise multipliers must be > 0"):
        sweep_dpsgd(config(Path("unused")), "synthetic", CellStore("unused"), noise=(1.0, 0.0))
    with pytest.raises(ValueError, match="varies a DP-SGD defence, got base defence 'mask'"):
        sweep_dpsgd(config(Path("unused")), "synthetic", CellStore("unused"),
                    base=DefenceSpec("mask"))


def test_the_page_goes_on_when_dpsgd_cannot_train_its_recipe(tmp_path, monkeypatch, capsys) -> None:
    """A recipe DP-SGD refuses (fit_dp's clear error) leaves the page's other cells and the page to be written."""
    import privacy.page

    ran = []
    monkeypatch.setattr(privacy.page, "run_grid", lambda config, store: ran.append(config.defences))

    def refuse(*a, **k):
        raise ValueError("DP-SGD's per-sample gradients (Opacus) need the softmax head, got head='cosface'")

    monkeypatch.setattr(privacy.sweep, "sweep_dpsgd", refuse)
    privacy.page.run_page(config(tmp_path), CellStore(tmp_path / "cells"), kstudy=False)
    assert ran == [("none",)]  # the page's own cells only: no dpsgd cell
    assert "dpsgd: not swept on synthetic: DP-SGD's per-sample gradients" in capsys.readouterr().err
