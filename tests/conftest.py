"""Shared fixtures: a tiny env configuration and the real data folder (if $MIXUP_ENV_DATA points to one)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

torch.set_num_threads(2)

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


@pytest.fixture(scope="session")
def private_models(tmp_path_factory) -> dict[str, Path]:
    """Two tiny models on the synthetic faces with 30 % of the identities held out: undefended and fixed k=3."""
    from fr_models.data import load_faces
    from fr_models.recipes import get_recipe
    from privacy.defences import DefenceSpec, train_fr_model

    root, out = tmp_path_factory.mktemp("privacy"), {}
    recipe = get_recipe("small").replace(epochs=2, batch_size=32)
    for name, spec in (("none", DefenceSpec("none")), ("fixed", DefenceSpec("fixed", k=3))):
        train_fr_model(load_faces("synthetic"), spec, recipe, root / name, public_fraction=0.3, progress=False)
        out[name] = root / name
    return out
