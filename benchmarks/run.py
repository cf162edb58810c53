"""The performance benchmark: the library against its floor and its alternatives, in one run, as ratios.

    python benchmarks/run.py                    # the whole table (under 20 min on 2 cores) -> docs/performance.md
    python benchmarks/run.py --quick            # a smaller version of every part (under 3 min)
    python benchmarks/run.py --device cuda      # the same on a GPU -> docs/performance-cuda.md
    MIXUP_ENV_DATA=../shared/data python benchmarks/run.py   # with real faces: frequency vs pixel on LFW

What it measures (each part names its target; the report says met or missed):

1. env overhead: median ``env.step()`` / median bare FR update (a plain torch loop over a copy of the same model,
   on the same mixed batch), interleaved, for every action mode; and where a step's time goes.
2. FR update efficiency: FLOPs of one update (``torch.utils.flop_counter``) per second, over the measured matmul
   peak of the same machine in the same run; a profile of the update.
3. transform: block DCT + mask of 256 faces at 112x112, ours vs ``scipy.fft.dctn`` (over all blocks at once, and
   per block); and whether the env's precomputed DCT keeps it out of a step (counted calls).
4. frequency vs pixel FR on LFW (``$MIXUP_ENV_DATA/lfw``): time per epoch and identification accuracy.
5. throughput: env steps/s, 1 and 2 vector envs, and the wall time of the default ``examples/train_ppo.py``.
6. memory: RSS of an env process over 20k steps (start vs end), and the peak RSS of each attack's process.
7. the device: everything above that uses the model runs on ``--device``.

Timings are medians over repetitions (the spread is min-max over the repetitions); ratios are taken within one
repetition, so machine noise hits both sides alike. Every figure in the written report comes from this run.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fr  # noqa: E402  (benchmarks/ is not a package)
import soak as soak_mod  # noqa: E402

from fr_models.system import PACKAGES, versions  # noqa: E402
from mixup_env import ACTION_MODES, FrequencyMixupEnv, mix_batch  # noqa: E402
from mixup_env.transform import FrequencyMasking  # noqa: E402

_PROGRESS = True  # set by main(); the inner progress bars follow it

TARGETS = {
    "env_overhead": 1.05,  # env step / (bare update + the observation's forward pass), at most
    "fr_efficiency": 0.4,  # achieved FLOP/s / matmul peak, at least
    "transform": 4.0,  # scipy time / ours, at least
    "freq_speedup": 1.0,  # pixel s/epoch / frequency s/epoch, at least (issue 14: protection costs no compute) ...
    "freq_points": 2.0,  # ... at this many top-1 points lost, at most
    "memory_growth": 0.05,  # RSS end / start - 1, at most
}


# ------------------------------------------------------------------------------------------------ helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes (the device synchronised before and after)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(s: dict[str, float], digits: int = 2, scale: float = 1.0) -> str:
    """``median (min-max)`` of a :func:`spread`."""
    return (f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f})")


def machine(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"date": _dt.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "device": str(device),
            "versions": {n: v for n, v in versions((*PACKAGES, "mixup-env")).items()
                         if n not in ("python", "platform", "cpus")}}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def env_config(device: torch.device, **overrides: Any) -> dict[str, Any]:
    """The default env's arguments (synthetic faces, batch 64, the `small` recipe), for benchmarking."""
    return {"data": "synthetic", "device": device, "episode_steps": 10**9, **overrides}


# ------------------------------------------------------------------------------ 1 + 2: env overhead, FR update
def bare_update_fn(env: FrequencyMixupEnv, x: torch.Tensor, y: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A plain torch training step on a copy of the env's FR model and a fresh AdamW, on the batch ``(x, y)``."""
    trainer = env.trainer
    assert trainer is not None
    backbone, head = copy.deepcopy(trainer.backbone).train(), copy.deepcopy(trainer.head).train()
    d = trainer.optimizer.defaults  # the trainer's own settings (lr, fused on a GPU), its weight decay
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(head.parameters()), lr=d["lr"],
                            weight_decay=trainer.config.weight_decay, fused=d.get("fused"))

    def update() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = head(backbone(x), y).mean()
        loss.backward()
        opt.step()
        return loss

    return update


def env_overhead(device: torch.device, reps: int, steps: int, warmup: int = 10) -> dict[str, Any]:
    """Item 1: env step vs (bare FR update + the clean forward pass its observation needs) for every action mode,
    also vs that plus the mixing and the batch draw (what is left is the env's own bookkeeping and its periodic
    accuracy evaluation), and the parts of a step (batch_discrete)."""
    out: dict[str, Any] = {"modes": {}}
    for mode in tqdm(ACTION_MODES, desc="1 env overhead", leave=False, disable=not _PROGRESS):
        env = FrequencyMixupEnv(**env_config(device, action_mode=mode))
        env.reset(seed=0)
        env.action_space.seed(0)
        x, y = env._batch
        mixed = mix_batch(x, y, 4, env.num_classes, 1.0, torch.Generator().manual_seed(0))
        bare = bare_update_fn(env, mixed.inputs, mixed.soft_labels)
        trainer, gen = env.trainer, torch.Generator().manual_seed(0)
        assert trainer is not None
        work = {"bare": bare, "forward": lambda: trainer.sample_stats(x, y),
                "mix": lambda: mix_batch(x, y, 4, env.num_classes, 1.0, gen), "draw": env._draw_batch}
        actions = [env.action_space.sample() for _ in range(warmup + reps * steps)]
        for a in actions[:warmup]:
            env.step(a)
            bare()
        ratios, ratios_env, times = [], [], {k: [] for k in ("step", *work)}
        for r in range(reps):
            t: dict[str, list[float]] = {k: [] for k in times}
            for a in actions[warmup + r * steps: warmup + (r + 1) * steps]:
                t["step"].append(timed(lambda: env.step(a), device))
                for name, fn in work.items():
                    t[name].append(timed(fn, device))
            med = {k: statistics.median(v) for k, v in t.items()}
            ratios.append(med["step"] / (med["bare"] + med["forward"]))
            ratios_env.append(med["step"] / (med["bare"] + med["forward"] + med["mix"] + med["draw"]))
            for k in times:
                times[k].append(med[k])
        out["modes"][mode] = {"ratio": spread(ratios), "ratio_with_mixing": spread(ratios_env),
                              "step_ms": spread([1e3 * v for v in times["step"]]),
                              "bare_ms": spread([1e3 * v for v in times["bare"]]),
                              "forward_ms": spread([1e3 * v for v in times["forward"]]),
                              "steps_per_s": spread([1.0 / v for v in times["step"]])}
    out["parts"] = step_parts(device, steps * reps)
    return out


def step_parts(device: torch.device, steps: int) -> dict[str, float]:
    """Median milliseconds of the parts of a ``batch_discrete`` step, each timed on its own."""
    env = FrequencyMixupEnv(**env_config(device))
    env.reset(seed=0)
    trainer = env.trainer
    assert trainer is not None
    gen = torch.Generator().manual_seed(0)  # as the env's: the mixing draws are made on the CPU
    parts: dict[str, list[float]] = {k: [] for k in ("env step", "decode action", "mixing (k=6)", "FR update",
                                                     "clean forward of the next batch (N)", "observation",
                                                     "draw batch", "accuracy eval / eval_every",
                                                     "batch-norm recalibration / eval_every",
                                                     "(not in this step) clean forward of 2N")}
    for i in range(steps):
        parts["env step"].append(timed(lambda: env.step(i % len(env.k_values)), device))
        x, y = env._batch
        parts["decode action"].append(timed(lambda: env.decode_action(4), device))
        mix = mix_batch(x, y, 6, env.num_classes, 1.0, gen)
        parts["mixing (k=6)"].append(timed(lambda: mix_batch(x, y, 6, env.num_classes, 1.0, gen), device))
        parts["FR update"].append(timed(lambda: trainer.train_step(mix.inputs, mix.soft_labels), device))
        parts["clean forward of the next batch (N)"].append(timed(lambda: trainer.sample_stats(x, y), device))
        xx, yy = torch.cat([x, x]), torch.cat([y, y])
        parts["(not in this step) clean forward of 2N"].append(timed(lambda: trainer.sample_stats(xx, yy), device))
        parts["observation"].append(timed(env._obs, device))
        parts["draw batch"].append(timed(env._draw_batch, device))
        if i % 10 == 0:
            t = timed(lambda: trainer.accuracy(env._test_x, env._test_y), device)
            parts["accuracy eval / eval_every"].append(t / env.eval_every)
            if env.recalibrate_norms:  # before every accuracy evaluation (mixup_env's recalibrate_norms)
                t = timed(lambda: trainer.recalibrate_norms(env._calib_x), device)
                parts["batch-norm recalibration / eval_every"].append(t / env.eval_every)
    return {k: 1e3 * statistics.median(v) for k, v in parts.items() if v}


def matmul_peak(device: torch.device, reps: int) -> dict[str, Any]:
    """The best float32 matmul rate of this machine (square products, the fastest size of a few)."""
    best: dict[str, Any] = {"flops_per_s": 0.0}
    for n in ((1024, 2048) if device.type == "cpu" else (4096, 8192)):
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        a @ b  # warm-up
        rates = [2 * n**3 / timed(lambda: a @ b, device) for _ in range(max(reps, 3))]
        if max(rates) > best["flops_per_s"]:
            best = {"flops_per_s": max(rates), "n": n, "rates": spread(rates)}
    return best


def fr_efficiency(device: torch.device, reps: int, steps: int, peak: dict[str, Any], recipe: str | None = None
                  ) -> dict[str, Any]:
    """Item 2: FLOP/s of one FR update over the matmul peak, at the env's batch size and a larger one; a profile.

    :param recipe: the FR recipe (``None``: the default env's, ``"small"`` on the synthetic faces; ``"real"``: the
        default on real faces, measured on the synthetic faces, which have LFW's 64x64 input shape).
    """
    from torch.utils.flop_counter import FlopCounterMode

    rows: dict[Any, Any] = {}
    for batch in (64, 256):
        env = FrequencyMixupEnv(**env_config(device, batch_size=batch, **({"recipe": recipe} if recipe else {})))
        env.reset(seed=0)
        x, y = env._batch
        mixed = mix_batch(x, y, 4, env.num_classes, 1.0, torch.Generator().manual_seed(0))
        update = bare_update_fn(env, mixed.inputs, mixed.soft_labels)
        with FlopCounterMode(display=False) as counter:
            update()
        flops = counter.get_total_flops()
        for _ in range(5):
            update()
        per_rep = [statistics.median(timed(update, device) for _ in range(steps)) for _ in range(reps)]
        rates = [flops / t for t in per_rep]
        rows[batch] = {"flops": flops, "update_ms": spread([1e3 * t for t in per_rep]),
                       "flops_per_s": spread(rates), "of_peak": spread([r / peak["flops_per_s"] for r in rates])}
        if batch == 64:
            rows["profile"] = profile_update(update, device)
    return rows


def profile_update(update: Callable[[], Any], device: torch.device, calls: int = 20) -> list[dict[str, Any]]:
    """Where an FR update's time goes: the operators with the most self time, over ``calls`` updates."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            update()
        _sync(device)
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr, 0.0) for e in events) or 1.0
    top = sorted(events, key=lambda e: getattr(e, attr, 0.0), reverse=True)[:8]
    return [{"op": e.key, "share": getattr(e, attr, 0.0) / total, "ms_per_update": getattr(e, attr, 0.0) / 1e3 / calls,
             "calls_per_update": e.count / calls} for e in top]


# ------------------------------------------------------------------------------------------------ 3: transform
def scipy_block_dct(images: np.ndarray, kept: np.ndarray, workers: int) -> np.ndarray:
    """scipy's block DCT + mask over all blocks at once: ``(N, 1, H, W)`` -> ``(N, kept, H/8, W/8)``."""
    n, _, h, w = images.shape
    blocks = images.reshape(n, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4)
    coeffs = scipy.fft.dctn(blocks, axes=(-2, -1), norm="ortho", workers=workers)
    return coeffs.reshape(n, h // 8, w // 8, 64)[..., kept].transpose(0, 3, 1, 2)


def scipy_per_block(images: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """scipy's ``dctn`` called on each 8x8 block in turn, then the mask."""
    n, _, h, w = images.shape
    out = np.empty((n, h // 8, w // 8, 64), dtype=images.dtype)
    for i in range(n):
        for bi in range(h // 8):
            for bj in range(w // 8):
                block = images[i, 0, 8 * bi:8 * bi + 8, 8 * bj:8 * bj + 8]
                out[i, bi, bj] = scipy.fft.dctn(block, norm="ortho").ravel()
    return out[..., kept].transpose(0, 3, 1, 2)


def transform_bench(device: torch.device, reps: int, calls: int, per_block: bool, step_ms: float) -> dict[str, Any]:
    """Item 3: our block DCT + mask vs scipy's, and the per-step cost the env's precomputation removes."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(256, 1, 112, 112, generator=gen) * 255
    masking = FrequencyMasking().to(device)
    kept = np.asarray(masking.mask.kept)
    x = images.to(device)
    np_images = images.numpy()
    workers = torch.get_num_threads()
    ours = masking(x)
    ref = scipy_block_dct(np_images, kept, workers)
    max_err = float(np.abs(ours.cpu().numpy() - ref).max())
    masking(x)
    t_ours, t_vec, t_loop = [], [], []
    for _ in range(reps):
        t_ours.append(statistics.median(timed(lambda: masking(x), device) for _ in range(calls)))
        t_vec.append(statistics.median(timed(lambda: scipy_block_dct(np_images, kept, workers), torch.device("cpu"))
                                       for _ in range(calls)))
    out: dict[str, Any] = {"max_abs_diff": max_err, "ours_ms": spread([1e3 * t for t in t_ours]),
                           "scipy_ms": spread([1e3 * t for t in t_vec]),
                           "speedup": spread([v / o for v, o in zip(t_vec, t_ours)]), "scipy_workers": workers}
    if per_block:
        loop_ref = scipy_per_block(np_images[:8], kept)
        out["per_block_max_abs_diff"] = float(np.abs(loop_ref - ref[:8]).max())
        for _ in range(reps):
            t_loop.append(timed(lambda: scipy_per_block(np_images, kept), torch.device("cpu")))
        out["per_block_ms"] = spread([1e3 * t for t in t_loop])
        out["per_block_speedup"] = spread([v / o for v, o in zip(t_loop, t_ours)])

    # Precomputation: count the env's calls of the transform during steps, and price one batch's transform.
    env = FrequencyMixupEnv(**env_config(device))
    env.reset(seed=0)
    calls_seen: list[int] = []
    hook = env.masking.register_forward_pre_hook(lambda *_: calls_seen.append(1))
    for i in range(50):
        env.step(i % len(env.k_values))
    hook.remove()
    batch_images = torch.rand(env.batch_size, 1, *env._image_size, generator=gen).to(device)
    per_batch = statistics.median(timed(lambda: env.masking(batch_images), device) for _ in range(max(calls, 5)))
    out["precompute"] = {"transform_calls_in_50_steps": len(calls_seen), "batch_transform_ms": 1e3 * per_batch,
                         "share_of_step": 1e3 * per_batch / step_ms, "image_size": list(env._image_size),
                         "batch_size": env.batch_size}
    return out


# ------------------------------------------------------------------------------------ 4: frequency vs pixel
def freq_vs_pixel(epochs: int, models: tuple[str, ...], out: Path, progress: bool) -> dict[str, Any]:
    """Item 4: the pixel and masked frequency models of ``benchmarks/bench_fr.py`` on LFW's private identities,
    seed 0; time per epoch and top-1 (the 3-seed figures are bench_fr's). Finished bench_fr cells in ``out`` with
    the same settings are read instead of retrained (both models then come from one bench_fr run)."""
    data_dir = os.environ.get("MIXUP_ENV_DATA")
    if not data_dir or not (Path(data_dir) / "lfw").is_dir():
        return {"skipped": "no LFW: set MIXUP_ENV_DATA to a folder holding lfw/ (e.g. ../shared/data)"}
    before = {m: (out / f"lfw__{m}__s0.json").is_file() for m in models}
    cells = {m: bench_fr.run_cell("lfw", m, 0, epochs, out, progress) for m in models}
    pixel = cells["pixel"]
    result: dict[str, Any] = {"epochs": epochs, "image_size": pixel["recipe"]["image_size"], "rows": {},
                              "reused": all(before.values()) and str(out)}
    for name, c in cells.items():
        result["rows"][name] = {
            "top1": c["top1"], "balanced": c["balanced"], "majority_class": c["majority_class"],
            "epoch_s": c["s_per_epoch"], "speedup": pixel["s_per_epoch"] / c["s_per_epoch"],
            "points": 100 * (c["top1"] - pixel["top1"]), "verification": c["verification_unseen"]}
    return result


# --------------------------------------------------------------------------------------------- 5: throughput
def vec_throughput(device: torch.device, steps: int) -> dict[str, Any]:
    """Env steps/s through SB3 vector envs: 1 env, 2 envs in one process, 2 envs in two processes."""
    from agents import make_vec_env

    out = {}
    for label, n, kind in (("1 env", 1, "dummy"), ("2 envs, DummyVecEnv", 2, "dummy"),
                           ("2 envs, SubprocVecEnv", 2, "subproc")):
        venv = make_vec_env("mixup_env/FrequencyMixup-v0", n_envs=n, seed=0, vec_env=kind,
                            env_kwargs={"device": str(device)})
        venv.reset()
        rng = np.random.default_rng(0)
        for _ in range(5):
            venv.step(rng.integers(5, size=n))
        t0 = time.perf_counter()
        for _ in range(steps):
            venv.step(rng.integers(5, size=n))
        out[label] = n * steps / (time.perf_counter() - t0)
        venv.close()
    return out


# Runs a Python script and prints its own peak RSS at the end. The peak is read from /proc/self/status (VmHWM,
# the peak of this process's memory map): getrusage's ru_maxrss would include the parent's memory, which a child
# started by fork/vfork inherits before exec.
_PEAK_WRAPPER = """import runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    if script == '-c':
        exec(sys.argv[1])
    else:
        runpy.run_path(script, run_name='__main__')
finally:
    try:
        hwm = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM'))
    except (OSError, StopIteration):
        hwm = -1
    print('\\nPEAK_RSS_KB', hwm, flush=True)
"""


def _child(args: list[str], cwd: Path) -> dict[str, Any]:
    """Run ``python3 <args>`` (a script and its arguments, or ``-c code``): wall time, exit status, the process's
    own peak RSS in MiB (``nan`` where ``/proc`` is missing) and the tail of its output."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *args], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, check=False)
    out = res.stdout.decode(errors="replace")
    peaks = [line.split()[1] for line in out.splitlines() if line.startswith("PEAK_RSS_KB")]
    kb = int(peaks[-1]) if peaks else -1
    return {"seconds": time.perf_counter() - t0, "returncode": res.returncode,
            "peak_rss_mib": kb / 1024 if kb >= 0 else float("nan"), "tail": out[-2000:]}


def ppo_wall(timesteps: int | None, device: torch.device, out: Path) -> dict[str, Any]:
    """Wall time of ``examples/train_ppo.py`` (its defaults, or ``timesteps``), in a fresh process."""
    cmd = ["examples/train_ppo.py", "--no-progress", "--out", str(out), "--device", str(device)]
    if timesteps is not None:
        cmd += ["--timesteps", str(timesteps)]
    res = _child(cmd, ROOT)
    if res["returncode"]:
        raise RuntimeError(f"train_ppo.py failed:\n{res['tail']}")
    res["command"] = "python3 examples/train_ppo.py" + ("" if timesteps is None else f" --timesteps {timesteps}")
    res["timesteps"] = timesteps or "default (4000)"
    return res


# ------------------------------------------------------------------------------------------------ 6: memory
def env_memory(steps: int, device: torch.device) -> dict[str, Any]:
    """RSS of a fresh process running ``benchmarks/soak.py`` for ``steps`` steps."""
    res = _child([str(Path(soak_mod.__file__)), "--steps", str(steps),
                  "--warmup", str(min(1000, steps // 10)), "--json", "--device", str(device)], ROOT)
    if res["returncode"]:
        raise RuntimeError(f"soak.py failed:\n{res['tail']}")
    return json.loads(next(line for line in reversed(res["tail"].splitlines()) if line.startswith("{")))


def attack_memory(device: torch.device, out: Path) -> dict[str, Any]:
    """Peak RSS of each attack, each in its own process (with the evaluator it trains), on a pixel model of AT&T
    at 64x64 (synthetic faces without data). Iteration counts are cut, batch and model sizes are the defaults,
    so the peaks are those of the default run; the times are not."""
    from privacy.attacks import ATTACKS

    data_dir = os.environ.get("MIXUP_ENV_DATA")
    data = "att_faces" if data_dir and (Path(data_dir) / "att_faces").is_dir() else "synthetic"
    model_dir = out / "att_model"
    train = _child(["examples/train_fr.py", "--data", data, "--image-size", "64", "--defence", "mask",
                    "--public-fraction", "0.3", "--epochs", "2", "--no-progress", "--device", str(device),
                    "--out", str(model_dir)], ROOT)
    if train["returncode"]:
        raise RuntimeError(f"train_fr.py failed:\n{train['tail']}")
    rows: dict[str, Any] = {"data": data}
    for attack in tqdm(ATTACKS, desc="6 attack memory", leave=False, disable=not _PROGRESS):
        res = _child(["examples/evaluate_privacy.py", "--model", str(model_dir / "fr_model.pt"),
                      "--data", data, "--attacks", attack, "--evaluator-epochs", "1", "--prior-epochs", "2",
                      "--steps", "10", "--decoder-epochs", "1", "--unmix-epochs", "1", "--min-updates", "1",
                      "--no-progress", "--device", str(device), "--out", str(out / attack)], ROOT)
        if res["returncode"]:
            raise RuntimeError(f"evaluate_privacy.py --attacks {attack} failed:\n{res['tail']}")
        rows[attack] = {"peak_rss_mib": res["peak_rss_mib"], "seconds": res["seconds"]}
    base = _child(["-c", "import torch, privacy.attacks, mixup_env"], ROOT)
    rows["import_only_peak_rss_mib"] = base["peak_rss_mib"]
    return rows


# ------------------------------------------------------------------------------------------------- report
def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _section_1(r: dict[str, Any], tgt: dict[str, float]) -> list[str]:
    """Section 1 of the report (env overhead)."""
    lines: list[str] = []
    e = r["env_overhead"]
    lines += ["## 1. Env overhead: `env.step()` / (bare FR update + the observation's forward pass)", "",
              "Default env (synthetic 64x64 faces, batch 64, recipe `small`: a ResNet on maps of faces upsampled "
              "x2, `fr_loss`, accuracy evaluated every 50 steps). The bare update is a plain torch loop (zero_grad, "
              "forward, loss, backward, AdamW step) on a copy of the same model, on a batch mixed at k=4; the "
              "forward pass is the clean pass over the next batch that the observation's per-sample features need. "
              "*With mixing* adds to the denominator the mixing of a batch (k=4) and the env's batch draw (index, "
              "mirror): what is left above it is the env's own bookkeeping and its accuracy evaluation every "
              f"`eval_every` steps. Step and the parts alternate. Target <= {tgt['env_overhead']}.", "",
              "| action mode | env step ms | bare update ms | forward ms | ratio | ratio with mixing | target |",
              "|---|---|---|---|---|---|---|"]
    for mode, v in e["modes"].items():
        lines.append(f"| {mode} | {fmt(v['step_ms'])} | {fmt(v['bare_ms'])} | {fmt(v['forward_ms'])} | "
                     f"{fmt(v['ratio'])} | {fmt(v['ratio_with_mixing'])} | "
                     f"{verdict(v['ratio']['median'] <= tgt['env_overhead'])} |")
    parts = e["parts"]
    lines += ["", "Where a `batch_discrete` step's time goes (each part timed on its own, medians). The clean "
              "forward pass over the next batch feeds the observation's per-sample features; a reward that reads "
              "`clean_loss_after` makes it a pass over 2N (this batch after the update, and the next).", "",
              "| part | ms | share of a step |", "|---|---|---|"]
    for name, ms in parts.items():
        lines.append(f"| {name} | {ms:.2f} | {100 * ms / parts['env step']:.0f} % |")
    extra = ("mixing (k=6)", "draw batch", "batch-norm recalibration / eval_every", "accuracy eval / eval_every",
             "observation", "decode action")
    core = parts["FR update"] + parts["clean forward of the next batch (N)"]
    named = sum(parts.get(k, 0.0) for k in extra)
    lines += ["", f"Where the rest goes: above the update and the forward pass ({core:.2f} ms), the step spends "
              + ", ".join(f"{parts[k]:.2f} ms on {k.split(' / ')[0]}" for k in extra if k in parts)
              + f" ({named:.2f} ms together, {100 * named / parts['env step']:.0f} % of the step). The parts timed alone "
              f"add up to {core + named:.2f} ms against a step of {parts['env step']:.2f} ms: the env's own bookkeeping "
              f"(records, info, the reward) is within that difference ({parts['env step'] - core - named:+.2f} ms). "
              "The mixing is the defence itself and the draw its augmentation; the recalibration makes the "
              "accuracy in the observation a measurement of clean faces (see the env's `recalibrate_norms`)."]
    return lines


def _section_2(r: dict[str, Any], tgt: dict[str, float]) -> list[str]:
    """Section 2 of the report (FR update efficiency)."""
    lines: list[str] = []
    f = r["fr_efficiency"]
    peak = r["matmul_peak"]
    lines += ["", "## 2. FR update efficiency", "",
              f"Matmul peak of this machine in this run: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s (float32, "
              f"{peak['n']}x{peak['n']}, best of {peak['rates']['n']}). FLOPs of one update (forward and backward) "
              f"by `torch.utils.flop_counter`. Target >= {tgt['fr_efficiency']} of the peak. Two models: the default "
              "on real faces (recipe `real`: the ResNet on 54 maps of 32x32, faces at 64x64 upsampled x4; measured "
              "on the synthetic faces, which have LFW's input shape) and the default env's on the synthetic faces "
              "(recipe `small`).", "",
              "| model | batch | GFLOP per update | update ms | GFLOP/s | of peak | target |",
              "|---|---|---|---|---|---|---|"]
    models = ([("real (default on real faces)", f["real"])] if "real" in f else []) + [("small (synthetic)", f)]
    for label, rows in models:
        for batch in (64, 256):
            v = rows[batch] if batch in rows else rows[str(batch)]
            lines.append(f"| {label} | {batch} | {v['flops'] / 1e9:.3f} | {fmt(v['update_ms'])} | "
                         f"{fmt(v['flops_per_s'], 1, 1e-9)} | {fmt(v['of_peak'], 3)} | "
                         f"{verdict(v['of_peak']['median'] >= tgt['fr_efficiency'])} |")
    prof = f["real"] if "real" in f else f
    lines += ["", f"Profile of the batch-64 update of the {'real' if 'real' in f else 'small'} model (operators "
              "with the most self time):", "",
              "| operator | share | ms per update | calls per update |", "|---|---|---|---|"]
    for p in prof["profile"]:
        lines.append(f"| `{p['op']}` | {100 * p['share']:.1f} % | {p['ms_per_update']:.3f} | "
                     f"{p['calls_per_update']:.0f} |")
    return lines


def _section_3(r: dict[str, Any], tgt: dict[str, float]) -> list[str]:
    """Section 3 of the report (transform)."""
    lines: list[str] = []
    t = r["transform"]
    lines += ["", "## 3. Transform: block DCT + mask of 256 faces at 112x112", "",
              f"Ours (`FrequencyMasking`, one matmul per block against the 64x64 DCT basis) vs `scipy.fft.dctn` "
              f"(norm='ortho', workers={t['scipy_workers']}). Largest difference between the two outputs: "
              f"{t['max_abs_diff']:.2e}. Target >= {tgt['transform']}x.", "",
              "| implementation | ms | ours is faster by | target |", "|---|---|---|---|",
              f"| ours | {fmt(t['ours_ms'])} | | |",
              f"| scipy `dctn` over all blocks at once | {fmt(t['scipy_ms'])} | {fmt(t['speedup'])}x | "
              f"{verdict(t['speedup']['median'] >= tgt['transform'])} |"]
    if "per_block_ms" in t:
        lines.append(f"| scipy `dctn` per 8x8 block | {fmt(t['per_block_ms'], 0)} | "
                     f"{fmt(t['per_block_speedup'], 0)}x | "
                     f"{verdict(t['per_block_speedup']['median'] >= tgt['transform'])} |")
    pc = t["precompute"]
    lines += ["", f"Precomputation: the env transforms its data set once, at construction. In 50 env steps the "
              f"transform ran {pc['transform_calls_in_50_steps']} times (counted with a hook). Transforming each "
              f"step's batch instead ({pc['batch_size']} faces at {pc['image_size'][0]}x{pc['image_size'][1]}) would "
              f"cost {pc['batch_transform_ms']:.2f} ms, {100 * pc['share_of_step']:.1f} % of a step."]
    return lines


def _section_4(r: dict[str, Any], tgt: dict[str, float]) -> list[str]:
    """Section 4 of the report (frequency vs pixel models)."""
    lines: list[str] = []
    fp = r["freq_vs_pixel"]
    lines += ["", "## 4. Frequency-domain vs pixel-domain FR on LFW", ""]
    if "skipped" in fp:
        lines.append(f"Not measured in this run: {fp['skipped']}.")
    else:
        pixel = fp["rows"]["pixel"]
        lines += [f"LFW, the 100 private identities of the defence grid, {fp['image_size']}x{fp['image_size']}, "
                  f"{fp['epochs']} epochs each, seed 0, the `real` recipe (`benchmarks/bench_fr.py`'s models: "
                  "`pixel` = `--defence none`, `mask` = masked frequency channels, no mixing; its 3-seed figures "
                  "are in docs/benchmarks.md). Target: frequency time per epoch at most the pixel model's "
                  f"(pixel time / this >= {tgt['freq_speedup']}) at <= {tgt['freq_points']} points of top-1 lost."
                  + (f" Both models read from the finished cells of one bench_fr run (`--fr-cells {fp['reused']}`)."
                     if fp.get("reused") else " Both trained in this run."),
                  "", "| model | s/epoch | pixel time / this | top-1 | balanced | majority class | top-1 vs pixel | "
                  "verification (unseen identities) | target |", "|---|---|---|---|---|---|---|---|---|"]
        for name, v in fp["rows"].items():
            ok = v["speedup"] >= tgt["freq_speedup"] and v["points"] >= -tgt["freq_points"]
            ver = "" if v["verification"] is None else f"{v['verification']:.3f}"
            lines.append(f"| {name} | {v['epoch_s']:.2f} | {v['speedup']:.2f}x | {v['top1']:.3f} | "
                         f"{v['balanced']:.3f} | {v['majority_class']:.3f} | {v['points']:+.1f} points | {ver} | "
                         f"{'' if v is pixel else verdict(ok)} |")
    return lines


def _section_5(r: dict[str, Any], tgt: dict[str, float]) -> list[str]:
    """Section 5 of the report (throughput)."""
    lines: list[str] = []
    th = r["throughput"]
    bd = r["env_overhead"]["modes"]["batch_discrete"]["steps_per_s"]
    lines += ["", "## 5. Throughput", "",
              f"- env steps/s, default env, one env, stepped directly: {fmt(bd, 1)} (batch_discrete; every mode is "
              "in table 1)"]
    for label, sps in th["vector"].items():
        lines.append(f"- {label} (SB3 `make_vec_env`, random actions): {sps:.1f} env steps/s in all")
    pp = th["ppo"]
    lines.append(f"- `{pp['command']}` ({pp['timesteps']} timesteps, FR evaluation and saving included): "
                 f"{pp['seconds']:.0f} s wall, peak RSS {pp['peak_rss_mib']:.0f} MiB")
    return lines


def _section_6(r: dict[str, Any], tgt: dict[str, float]) -> list[str]:
    """Section 6 of the report (memory)."""
    lines: list[str] = []
    mem = r["memory"]
    s = mem["env"]
    lines += ["", "## 6. Memory", "",
              f"An env process (`benchmarks/soak.py`, the tiny configuration: {json.dumps(s['config'])}) over "
              f"{s['steps']} steps after {s['warmup']} warm-up steps ({s['episodes']} episodes): RSS "
              f"{s['start_mib']:.1f} MiB at the start, {s['end_mib']:.1f} MiB at the end ({100 * s['growth']:+.2f} %), "
              f"largest {s['max_mib']:.1f} MiB. Target: end within {100 * tgt['memory_growth']:.0f} % of the start: "
              f"{verdict(abs(s['growth']) <= tgt['memory_growth'])}.", ""]
    am = mem.get("attacks")
    if am is None:
        lines.append("Attacks: not measured in this run (`python benchmarks/run.py` without `--quick` or `--skip "
                     "attacks` measures them).")
    else:
        lines += [f"Peak RSS of each attack, each in its own process that also trains its evaluator, against a "
                  f"masked-frequency model of {am['data']} at 64x64 (iterations cut, batch and model sizes at their "
                  f"defaults; a process that only imports the library peaks at {am['import_only_peak_rss_mib']:.0f} "
                  "MiB). The attacks' times at full settings are in `docs/privacy.md`.", "",
                  "| attack | peak RSS MiB |", "|---|---|"]
        for name, v in am.items():
            if isinstance(v, dict):
                lines.append(f"| {name} | {v['peak_rss_mib']:.0f} |")
    return lines


def _section_7(r: dict[str, Any], tgt: dict[str, float]) -> list[str]:
    """Section 7 of the report (device)."""
    lines: list[str] = []
    m = r["machine"]
    lines += ["", "## 7. Device", ""]
    if m["device"].startswith("cuda"):
        lines.append(f"Every model-side figure above ran on {m.get('gpu', m['device'])}.")
    else:
        lines.append("This table ran on the CPU. The CUDA table, where one was measured, is "
                     "`docs/performance-cuda.md` (`python benchmarks/run.py --device cuda`); a CPU-only run does not "
                     "measure it.")
    lines += ["", f"Whole benchmark run: {r['seconds'] / 60:.1f} min.", ""]
    return lines


def report(r: dict[str, Any]) -> str:
    """The Markdown report of one run (every number from ``r``)."""
    m = r["machine"]
    lines = [f"# Performance ({'quick run' if r['quick'] else 'full run'}, device {m['device']})", "",
             "Generated by `" + r["command"] + "` on " + m["date"] + ". Do not edit by hand: re-run the command.", "",
             f"- machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}"
             + (f", GPU {m['gpu']}" if "gpu" in m else "") + f"; {m['platform']}",
             "- versions: python " + m["python"] + ", " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
             f"- timings: median over {r['reps']} repetitions, spread = (min-max) over the repetitions; ratios are "
             "taken within each repetition", ""]
    tgt = TARGETS
    lines += _section_1(r, tgt)
    lines += _section_2(r, tgt)
    lines += _section_3(r, tgt)
    lines += _section_4(r, tgt)
    lines += _section_5(r, tgt)
    lines += _section_6(r, tgt)
    lines += _section_7(r, tgt)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="every part, smaller (under 3 minutes on 2 cores)")
    p.add_argument("--device", default="cpu", help="torch device of the models (cpu, cuda, cuda:1, ...)")
    p.add_argument("--out", type=Path, default=None,
                   help="Markdown report (default docs/performance.md, or docs/performance-cuda.md on a GPU)")
    p.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    p.add_argument("--work", type=Path, default=None, help="folder for the runs' files (default: a temporary one)")
    p.add_argument("--reps", type=int, default=None, help="repetitions of each timing (default 5, quick 3)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per repetition (default 40, quick 15)")
    p.add_argument("--skip", nargs="*", default=[], choices=["lfw", "ppo", "vector", "soak", "attacks", "per-block"],
                   help="leave parts out (for smoke tests)")
    p.add_argument("--fr-cells", type=Path, default=None, help="folder of benchmarks/bench_fr.py's finished runs: "
                   "section 4 reuses its seed-0 LFW pixel and mask cells instead of training them again")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device on this machine; use --device cpu")
    quick = args.quick
    reps = (3 if quick else 5) if args.reps is None else args.reps
    steps = (15 if quick else 40) if args.steps is None else args.steps
    if reps < 1 or steps < 1:
        raise SystemExit(f"--reps and --steps must be >= 1, got {reps} and {steps}")
    out = args.out or ROOT / "docs" / ("performance-cuda.md" if device.type == "cuda" else "performance.md")
    work = args.work or Path(tempfile.mkdtemp(prefix="mixup_bench_"))
    global _PROGRESS
    _PROGRESS = not args.no_progress
    t0 = time.perf_counter()
    r: dict[str, Any] = {"quick": quick, "reps": reps, "steps": steps, "machine": machine(device),
                         "command": "python3 benchmarks/run.py" + (" --quick" if quick else "")
                         + ("" if device.type == "cpu" else f" --device {args.device}")}
    stages = tqdm(total=7, desc="benchmark", disable=args.no_progress)

    def stage(name: str) -> None:
        stages.set_postfix_str(name)
        stages.update(1)

    r["env_overhead"] = env_overhead(device, reps, steps)
    stage("env overhead")
    r["matmul_peak"] = matmul_peak(device, reps)
    r["fr_efficiency"] = fr_efficiency(device, reps, steps, r["matmul_peak"])
    r["fr_efficiency"]["real"] = fr_efficiency(device, reps, steps, r["matmul_peak"], recipe="real")
    stage("FR update")
    step_ms = r["env_overhead"]["modes"]["batch_discrete"]["step_ms"]["median"]
    r["transform"] = transform_bench(device, reps, 5 if quick else 10, "per-block" not in args.skip and not quick,
                                     step_ms)
    stage("transform")
    r["freq_vs_pixel"] = ({"skipped": "left out (--skip lfw)"} if "lfw" in args.skip else
                          freq_vs_pixel(2 if quick else bench_fr.DATASETS["lfw"]["epochs"], ("pixel", "mask"),
                                        args.fr_cells or work / "fr", not args.no_progress))
    stage("frequency vs pixel")
    r["throughput"] = {"vector": {} if "vector" in args.skip else vec_throughput(device, 20 if quick else 100),
                       "ppo": ({"command": "skipped", "timesteps": 0, "seconds": 0.0, "peak_rss_mib": 0.0}
                               if "ppo" in args.skip else ppo_wall(256 if quick else None, device, work / "ppo"))}
    stage("throughput")
    r["memory"] = {"env": ({"config": {}, "steps": 0, "warmup": 0, "episodes": 0, "start_mib": 0.0, "end_mib": 0.0,
                            "growth": 0.0, "max_mib": 0.0} if "soak" in args.skip else
                           env_memory(2000 if quick else 20000, device))}
    if not quick and "attacks" not in args.skip:
        r["memory"]["attacks"] = attack_memory(device, work / "attacks")
    stage("memory")
    r["seconds"] = time.perf_counter() - t0
    stage("report")
    stages.close()
    text = report(r)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=str))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    return r


if __name__ == "__main__":
    main()
