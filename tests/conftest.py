"""Shared fixtures: a tiny env configuration and the real data folder (if $MIXUP_ENV_DATA points to one)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (a script, not a package) as the module ``example_<name>``."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


#: Small and fast: 16-image batches, a narrow backbone, a few steps.
TINY_ENV: dict[str, Any] = {"batch_size": 16, "episode_steps": 6, "eval_every": 3, "recipe": "tiny"}


@pytest.fixture
def tiny_env_kwargs() -> dict[str, Any]:
    return dict(TINY_ENV)


@pytest.fixture
def data_root() -> Path:
    root = os.environ.get("MIXUP_ENV_DATA")
    if not root or not Path(root).is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-data tests, but MIXUP_ENV_DATA={root!r} is not a folder (.ci/run sets it)")
        pytest.skip("set MIXUP_ENV_DATA to the folder of real face data sets (e.g. ../shared/data) to run this test")
    return Path(root)
