import os
import pathlib

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("MAGICBOOST_SHARED", REPO.parent / "shared"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def shared_dir():
    if not SHARED.exists():
        pytest.skip(f"shared fixtures folder not found at {SHARED} (set MAGICBOOST_SHARED)")
    return SHARED
