"""Smoke tests of the benchmark code on tiny configurations (no timing is asserted: these machines are noisy)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import run as bench_run  # noqa: E402
import soak  # noqa: E402


def test_scipy_references_match_our_transform() -> None:
    from mixup_env.transform import FrequencyMasking

    images = torch.rand(2, 1, 16, 24, generator=torch.Generator().manual_seed(0)) * 255
    masking = FrequencyMasking()
    kept = np.asarray(masking.mask.kept)
    ours = masking(images).numpy()
    vec = bench_run.scipy_block_dct(images.numpy(), kept, workers=1)
    loop = bench_run.scipy_per_block(images.numpy(), kept)
    assert vec.shape == ours.shape == (2, 54, 2, 3)
    np.testing.assert_allclose(vec, ours, atol=1e-3)
    np.testing.assert_allclose(loop, ours, atol=1e-3)


def test_spread_and_fmt() -> None:
    s = bench_run.spread([3.0, 1.0, 2.0])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert bench_run.fmt(s, 1) == "2.0 (1.0-3.0)"


def test_soak_reports_memory_at_start_and_end() -> None:
    out = soak.soak(30, warmup=5, samples=3, batch_size=8, episode_steps=7, eval_every=5)
    assert out["steps"] == 30 and len(out["trace"]) == 4 and [s for s, _ in out["trace"]] == [0, 10, 20, 30]
    assert out["episodes"] == 1 + (35 // 7)  # resets at every truncation
    assert out["start_mib"] > 0 and out["max_mib"] >= max(out["start_mib"], out["end_mib"])
    assert out["growth"] == pytest.approx(out["end_mib"] / out["start_mib"] - 1)
    with pytest.raises(ValueError, match="steps >= 1"):
        soak.soak(0)


@pytest.mark.slow
def test_benchmark_runs_end_to_end_on_a_tiny_configuration(tmp_path: Path) -> None:
    report = tmp_path / "perf.md"
    r = bench_run.main(["--quick", "--reps", "1", "--steps", "2", "--no-progress", "--out", str(report),
                        "--json", str(tmp_path / "perf.json"), "--skip", "lfw", "ppo", "vector", "soak"])
    text = report.read_text()
    for heading in ("## 1. Env overhead", "## 2. FR update efficiency", "## 3. Transform", "## 4. Frequency",
                    "## 5. Throughput", "## 6. Memory", "## 7. Device"):
        assert heading in text
    # every action mode has a finite positive ratio: step time over (update + observation forward) time of the same
    # repetition (one repetition: the medians are that repetition's); with the mixing and the draw it is smaller
    for mode in ("batch_discrete", "sample_discrete", "batch_continuous", "sample_continuous"):
        v = r["env_overhead"]["modes"][mode]
        assert v["ratio"]["median"] == pytest.approx(
            v["step_ms"]["median"] / (v["bare_ms"]["median"] + v["forward_ms"]["median"]))
        assert 0 < v["ratio_with_mixing"]["median"] < v["ratio"]["median"]
        assert re.search(rf"\| {mode} \| [0-9.]+ \([0-9.]+-[0-9.]+\) \|", text)
    assert r["fr_efficiency"][64]["flops"] > 0 and 0 < r["fr_efficiency"][64]["of_peak"]["median"]
    assert r["fr_efficiency"][256]["flops"] == pytest.approx(4 * r["fr_efficiency"][64]["flops"], rel=0.05)
    real = r["fr_efficiency"]["real"]  # the default model on real faces costs more FLOPs than the synthetic one
    assert real[64]["flops"] > 5 * r["fr_efficiency"][64]["flops"] and "real (default on real faces)" in text
    assert r["transform"]["max_abs_diff"] < 1e-2
    assert r["transform"]["precompute"]["transform_calls_in_50_steps"] == 0  # the data set's DCT is precomputed
    assert "Not measured in this run: left out (--skip lfw)" in text
    assert json.loads((tmp_path / "perf.json").read_text())["reps"] == 1


def test_benchmark_refuses_a_missing_gpu_and_bad_counts(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            bench_run.main(["--device", "cuda", "--out", str(tmp_path / "x.md")])
    with pytest.raises(SystemExit, match="must be >= 1"):
        bench_run.main(["--reps", "0", "--out", str(tmp_path / "x.md")])
