"""Shared test helpers for the trainer tests: a tiny UNet config and random multi-view data."""
import torch

from magicboost_core.train.dataset import MultiViewData

TINY = dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
            num_head_channels=32, context_dim=32, ip_tokens=4, resampler_depth=1, resampler_heads=1,
            resampler_dim_head=16, resampler_ff_mult=1)


def tiny_data(n=6, k=2, size=16) -> MultiViewData:
    """n objects with 4 anchors and k targets of size x size uint8 pixels, random poses (seeded)."""
    g = torch.Generator().manual_seed(0)
    return MultiViewData(
        anchors=torch.randint(0, 256, (n, 4, size, size, 3), generator=g, dtype=torch.uint8),
        targets=torch.randint(0, 256, (n, k, size, size, 3), generator=g, dtype=torch.uint8),
        target_elevation=torch.rand(n, k, generator=g) * 40 - 10,
        target_azimuth=torch.rand(n, k, generator=g) * 360 - 180,
    )
