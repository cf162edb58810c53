"""privacy.kstudy: the data-level attacks against each mixing scheme, on one masked model's transform."""

from __future__ import annotations

import json

import pytest

import privacy.kstudy
from privacy.evaluate import AttackBudget
from privacy.grid import CellStore, DataSettings, GridConfig
from privacy.kstudy import Scheme, default_schemes, kstudy_rows, policy_schemes, run_kstudy

TINY = AttackBudget(identities=3, steps=1, restarts=1, views=1, decoder_epochs=1, unmix_epochs=1, min_updates=1,
                    evaluator_epochs=1, prior_epochs=1, grid_identities=3, observed_epochs=2)


def config(tmp_path) -> GridConfig:
    return GridConfig(("synthetic",), ("mask",), (0,), TINY, work=tmp_path / "work", recipe="tiny", progress=False,
                      data_settings={"synthetic": DataSettings(None, 0.3, 1)}, judges=("evaluator",))


def test_schemes_reach_the_attacks_are_kept_and_reused(tmp_path, monkeypatch) -> None:
    store = CellStore(tmp_path / "kstudy")
    schemes = [Scheme("k1", (1,)), Scheme("mix", (2, 6), (0.0, 1.0), "a policy")]
    records = run_kstudy(config(tmp_path), "synthetic", store, schemes)
    one, mix = records
    # the scheme is what the attacks simulated: k = 1 leaves each face alone, a k = 6 mix never does
    assert one["attacks"]["datalevel"]["k_values"] == [1] and one["attacks"]["datalevel"]["dominant_weight"] == 1.0
    assert mix["attacks"]["datalevel"]["k_values"] == [2, 6] and mix["attacks"]["datalevel"]["k_weights"] == [0, 1]
    assert mix["attacks"]["datalevel"]["dominant_weight"] < 0.9
    assert set(one["attacks"]) == {"datalevel", "datalevel_cluster"}
    for r in records:
        for m in r["attacks"].values():
            lo, hi = m["intervals"]["top1"]
            assert lo <= m["top1"] <= hi and set(m["judges"]) == {"evaluator"}
        assert r["attacked_identities"] == 3 and {"uniform", "majority"} <= set(r["chance"])
    assert sorted(p.name for p in store.root.iterdir()) == ["synthetic__k1__s0.json", "synthetic__mix__s0.json"]
    # one mask model serves every scheme
    assert [p.name for p in (tmp_path / "work" / "synthetic").iterdir() if p.name.startswith("mask")] == ["mask_s0"]

    def boom(*a, **k):
        raise AssertionError("a finished scheme was attacked again")

    monkeypatch.setattr(privacy.kstudy, "evaluate_privacy", boom)
    assert run_kstudy(config(tmp_path), "synthetic", store, schemes) == records
    with pytest.raises(AssertionError, match="attacked again"):  # another weighting is another scheme
        run_kstudy(config(tmp_path), "synthetic", store, [Scheme("mix", (2, 6), (0.5, 0.5))])
    table = "\n".join(kstudy_rows(store, "synthetic", {"reinforce_s0": 6}))
    assert "| k = 1 | " in table and "k in {2: 0.00, 6: 1.00} (a policy)" in table
    assert "policies that chose one k throughout are that fixed row: reinforce_s0 k = 6." in table
    assert kstudy_rows(store, "lfw") == []


def test_policy_schemes_read_the_grid_cells(tmp_path) -> None:
    (tmp_path / "att__ppo__s0.json").write_text(json.dumps({"k_distribution": {"2": 0.25, "5": 0.75, "6": 0.0}}))
    (tmp_path / "att__reinforce__s1.json").write_text(json.dumps({"k_distribution": {"6": 0.995, "3": 0.005}}))
    (tmp_path / "att__sac__s0.json").write_text(json.dumps({"utility": {}}))  # no distribution recorded
    schemes, one_k = policy_schemes(tmp_path, "att")
    assert schemes == [Scheme("ppo_s0", (2, 5), (0.25, 0.75), "grid ppo seed 0")]
    assert one_k == {"reinforce_s1": 6}
    assert [s.label for s in default_schemes(3)] == ["k = 2", "k = 3", "k uniform in {2, 3}"]


def test_bad_schemes_and_budgets_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"scheme name 'a__b'.*no '__'"):
        Scheme("a__b", (2,))
    with pytest.raises(ValueError, match="k values must be >= 1"):
        Scheme("k0", (0,))
    with pytest.raises(ValueError, match="one weight >= 0 per k with a positive sum"):
        Scheme("w", (2, 3), (1.0,))
    with pytest.raises(ValueError, match="scheme names must be distinct"):
        run_kstudy(config(tmp_path), "synthetic", CellStore(tmp_path), [Scheme("a", (2,)), Scheme("a", (3,))])
    with pytest.raises(ValueError, match=r"mix_weights needs mix_k and one weight per k.*mix_k=None"):
        AttackBudget(mix_weights=(1.0,))
    with pytest.raises(ValueError, match="mix_weights must be >= 0 with a positive sum"):
        AttackBudget(mix_k=(2, 3), mix_weights=(0.0, 0.0))
    assert AttackBudget(mix_k=(2, 3), mix_weights=(1, 3)).as_dict()["mix_weights"] == [1.0, 3.0]
