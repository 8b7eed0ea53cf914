"""The shipped demo model (magicboost_core/assets/demo_model) loads and samples on CPU."""
from pathlib import Path

import pytest
import torch


DEMO = Path(__file__).resolve().parents[1] / "magicboost_core" / "assets" / "demo_model"


@pytest.fixture(scope="module")
def demo():
    if not (DEMO / "model.safetensors").exists():
        pytest.fail(f"shipped demo model missing at {DEMO}")
    from magicboost_core.model import MultiViewModel

    return MultiViewModel.from_pretrained(str(DEMO)).eval()


def test_files_and_size():
    for name in ("config.json", "model.safetensors", "MODEL_CARD.md"):
        assert (DEMO / name).exists(), name
    assert (DEMO / "model.safetensors").stat().st_size < 20 * 2**20


def test_samples_one_view(demo):
    from magicboost_core.train.evaluate import sample_targets

    g = torch.Generator().manual_seed(0)
    anchors = torch.ones(1, 4, 3, 32, 32)
    anchors[..., 8:24, 8:24] = torch.rand(1, 4, 3, 1, 1, generator=g)
    out = sample_targets(demo, anchors, torch.tensor([10.0]), torch.tensor([45.0]), steps=4, cfg=2.0, seed=0)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    out2 = sample_targets(demo, anchors, torch.tensor([10.0]), torch.tensor([45.0]), steps=4, cfg=2.0, seed=0)
    torch.testing.assert_close(out, out2)
