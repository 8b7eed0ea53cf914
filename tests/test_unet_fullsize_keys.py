"""The full-size model (meta device) covers every official UNet key of the released checkpoint layout."""
import json

import pytest
from conftest import SHARED
import torch

from magicboost_core.model.config import MultiViewUNetConfig
from magicboost_core.model.convert_unet import convert_official_unet, infer_unet_config, official_unet_key_map
from magicboost_core.model.unet import MultiViewUNet

PREFIX = "model.diffusion_model."


@pytest.fixture(scope="module")
def official_shapes():
    path = SHARED / "fixtures" / "official-unet-fullsize-keys.tsv"
    if not path.exists():
        pytest.skip(f"{path} not found (shared folder missing; set MAGICBOOST_SHARED)")
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines() if line.strip()]
    return {name: tuple(json.loads(shape)) for name, shape in rows}


@pytest.fixture(scope="module")
def meta_model():
    with torch.device("meta"):
        return MultiViewUNet(MultiViewUNetConfig.full())


def test_every_official_unet_key_maps_to_a_parameter_of_the_same_shape(official_shapes, meta_model):
    ours = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    unet_keys = {k[len(PREFIX):]: s for k, s in official_shapes.items() if k.startswith(PREFIX)}
    assert len(unet_keys) == 773
    key_map = official_unet_key_map(meta_model.config)
    assert set(key_map) == set(unet_keys)
    mismatched = {k: (s, ours.get(key_map[k])) for k, s in unet_keys.items() if ours.get(key_map[k]) != s}
    assert not mismatched
    assert set(key_map.values()) == set(ours), sorted(set(ours) - set(key_map.values()))
    assert sum(v.numel() for v in meta_model.parameters()) == 941_665_220


def test_convert_whole_checkpoint_layout(official_shapes, meta_model):
    """A whole LatentDiffusionInterface dict (schedule buffers, vae_model., clip_model.): only the UNet is taken."""
    sd = {k: torch.empty(s, device="meta") for k, s in official_shapes.items()}
    assert infer_unet_config(sd) == MultiViewUNetConfig.full()
    converted = convert_official_unet(sd)
    assert len(converted) == 773
    meta_model.load_state_dict(converted, strict=True, assign=True)
