"""``make gpu-check``'s CPU part (benchmarks/gpu_check.py) runs inside ``make test``."""
import importlib.util
import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("mb_gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_official_layout_state_dict_converts_back_exactly():
    gc = _load()
    from magicboost_core.model.convert_checkpoint import split_official_state_dict
    from magicboost_core.model.convert_unet import convert_official_unet

    sizes = gc.Sizes.tiny()
    sd = gc.official_layout_state_dict(sizes, dtype=torch.float32)
    parts = split_official_state_dict(sd)  # every key claimed, no extras
    assert parts.extras == [] and len(parts.schedule) == 12 and parts.text and parts.visual and parts.vae
    torch.manual_seed(0)
    ours = gc.MultiViewUNet(sizes.unet).state_dict()
    back = convert_official_unet(parts.unet)
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)


def test_gpu_check_cpu_part_writes_the_report(tmp_path):
    gc = _load()
    text = gc.run(tmp_path / "gpu_check.md", force_cpu=True)
    assert (tmp_path / "gpu_check.md").read_text() == text
    assert "No GPU found" in text
    for section in ("## Renderer parity", "## UNet precision", "## Refinement", "## Rasterizer"):
        assert section in text
    row = re.search(r"\| fp32 \| [\d.]+ ms \| [\d.]+ ms \| 0.00e\+00 \| 0.00e\+00 \| ([\d.e+-]+) \|", text)
    assert row and float(row.group(1)) < 1e-4  # the anchor cache is exact
    ref = re.search(r"refinement 8 steps, 32 px, batch 1 \((\d+) SDS, AIU yes\) \| [\d.]+ s/step \|", text)
    assert ref and int(ref.group(1)) > 0, text
    assert re.search(r"\| torch \(cpu\), \d+ faces, 4x256² \| [\d.]+ ms \| [\d.]+ ms \|", text)


def test_full_size_official_layout_matches_the_official_key_list():
    """The random checkpoint gpu-check converts on a GPU has exactly the official keys and shapes (shared fixture
    official-unet-fullsize-keys.tsv, taken from the official model), checked on the meta device."""
    import os

    import pytest

    tsv = Path(os.environ.get("MAGICBOOST_SHARED", REPO.parent / "shared")) / "fixtures" / \
        "official-unet-fullsize-keys.tsv"
    if not tsv.is_file():
        pytest.skip(f"{tsv} not found (set MAGICBOOST_SHARED)")
    official = {}
    for line in tsv.read_text().splitlines():
        name, shape = line.split("\t")
        official[name] = tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())
    gc = _load()
    ours = {k: tuple(v.shape) for k, v in gc.official_layout_state_dict(gc.Sizes.full(), meta=True).items()}
    missing = sorted(set(official) - set(ours))
    extra = sorted(set(ours) - set(official))
    assert not missing and not extra, (missing[:5], extra[:5])
    assert {k: s for k, s in ours.items() if official[k] != s} == {}
