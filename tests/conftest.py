import os
import pathlib

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("MAGICBOOST_SHARED", REPO.parent / "shared"))

# Tests use tiny tensors: one intra-op thread is fastest and immune to a busy machine (2 threads made
# small ops up to 20x slower under load). Override with MAGICBOOST_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("MAGICBOOST_TEST_THREADS", "1")))


@pytest.fixture
def shared_dir():
    if not SHARED.exists():
        pytest.skip(f"shared fixtures folder not found at {SHARED} (set MAGICBOOST_SHARED)")
    return SHARED
