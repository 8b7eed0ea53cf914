"""Score distillation in x0-reconstruction form (reference §5.2, steps 2-6 of the guidance forward).

Given clean latents ``z`` (B, C, h, w) of the renders (gradient flows through the encoder), one
timestep ``t`` for the batch and noise ``eps``::

    z_t   = sqrt(a_t) z + sqrt(1 - a_t) eps
    x0    = (z_t - sqrt(1 - a_t) eps_cfg)  / sqrt(a_t)        # CFG prediction
    x0_c  = (z_t - sqrt(1 - a_t) eps_cond) / sqrt(a_t)        # conditional prediction
    k     = (std(x0_c) + 1e-8) / (std(x0) + 1e-8)             # per sample, unbiased std over C,H,W
    x0    = r * k * x0 + (1 - r) * x0                         # r = recon_std_rescale = 0.2
    L     = 0.5 * sum((z - sg(x0))^2) / B

``a_t`` is ``alphas_cumprod[t]`` (float64 table, (1000,)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["add_noise", "predict_x0", "rescale_x0", "sds_x0_loss", "SDSOutput", "sds_step"]


def _alpha(alphas_cumprod: torch.Tensor, t: int, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(alphas_cumprod, dtype=torch.float64)[int(t)].to(like.device, torch.float32)


def add_noise(z: torch.Tensor, eps: torch.Tensor, t: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """q_sample: sqrt(a_t) z + sqrt(1 - a_t) eps."""
    a = _alpha(alphas_cumprod, t, z)
    return a.sqrt() * z + (1 - a).sqrt() * eps


def predict_x0(z_t: torch.Tensor, eps_hat: torch.Tensor, t: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    a = _alpha(alphas_cumprod, t, z_t)
    return (z_t - (1 - a).sqrt() * eps_hat) / a.sqrt()


def rescale_x0(x0: torch.Tensor, x0_cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """Blend ``x0`` towards the conditional prediction's per-sample std (``recon_std_rescale``)."""
    if rescale <= 0:
        return x0
    dims = tuple(range(1, x0.ndim))
    k = (x0_cond.std(dim=dims, keepdim=True) + 1e-8) / (x0.std(dim=dims, keepdim=True) + 1e-8)
    return rescale * k * x0 + (1 - rescale) * x0


def sds_x0_loss(z: torch.Tensor, x0_target: torch.Tensor) -> torch.Tensor:
    """0.5 * sum((z - sg(x0))^2) / B, a float32 scalar."""
    return 0.5 * ((z.float() - x0_target.detach().float()) ** 2).sum() / z.shape[0]


@dataclass
class SDSOutput:
    loss: torch.Tensor
    t: int
    x0: torch.Tensor          # (B, C, h, w) detached target
    grad_norm: float          # ||z - x0|| / B, for logging


def sds_step(guidance, images: torch.Tensor, elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, t: int,
             generator: torch.Generator | None = None, recon_std_rescale: float = 0.2) -> SDSOutput:
    """One SDS evaluation.

    Args:
        guidance: a :class:`~magicboost_core.refine.guidance.Guidance` (encode / predict / alphas_cumprod).
        images: (B, 3, H, W) float32 renders in [0, 1], on white; gradients flow back to the mesh.
        elevation_deg, azimuth_deg: (B,) target cameras.
        t: the batch's timestep.
    """
    z = guidance.encode(images, generator=generator)
    eps = torch.randn(z.shape, generator=generator, device="cpu", dtype=torch.float32).to(z.device)
    with torch.no_grad():
        z_t = add_noise(z.detach(), eps, t, guidance.alphas_cumprod)
        tt = torch.full((z.shape[0],), int(t), device=z.device, dtype=torch.long)
        eps_cfg, eps_cond = guidance.predict(z_t, tt, elevation_deg, azimuth_deg)
        x0 = predict_x0(z_t, eps_cfg.float(), t, guidance.alphas_cumprod)
        x0_c = predict_x0(z_t, eps_cond.float(), t, guidance.alphas_cumprod)
        x0 = rescale_x0(x0, x0_c, recon_std_rescale)
    loss = sds_x0_loss(z, x0)
    gn = float((z.detach() - x0).flatten(1).norm(dim=1).mean())
    return SDSOutput(loss=loss, t=int(t), x0=x0, grad_norm=gn)
