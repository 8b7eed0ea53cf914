"""DDIM sampling with the multi-view denoiser (reference §1.1, §4, §5.2 AIU).

DDIM with eta 0 on the official timesteps; the lowest step uses ``ᾱ_prev = ᾱ[0]``. With ``init_latents``
and ``strength < 1`` it is SDEdit: ``z_T = q_sample(z0, t_start, noise)`` then the remaining steps (AIU:
strength 0.1 of 50 steps -> 81, 61, 41, 21, 1).
"""
from __future__ import annotations

from typing import Callable

import torch

from .schedule import ddim_timesteps, previous_alpha_cumprod, q_sample, seeded_randn

__all__ = ["ddim_update", "ddim_sample", "sample_novel_views", "nearest_condition_view", "INIT_MODES"]

#: Where novel-view sampling starts: pure noise (official) or SDEdit from the nearest condition view.
INIT_MODES = ("noise", "nearest_view")

Progress = Callable[[int, int, object], None]


def ddim_update(z: torch.Tensor, eps: torch.Tensor, a_t: float, a_prev: float,
                clip_x0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DDIM step (eta 0): ``(z_prev, x0)`` from ``z`` at ᾱ_t and the prediction ``eps``.

    ``clip_x0`` clamps the x0 estimate to [-1, 1] and re-derives eps from it (pixel-space practice,
    diffusers' ``clip_sample``); the official latent-space sampler does not clip.
    """
    a_t, a_prev = torch.as_tensor(a_t, dtype=z.dtype), torch.as_tensor(a_prev, dtype=z.dtype)
    x0 = (z - (1.0 - a_t).sqrt() * eps) / a_t.sqrt()
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (z - a_t.sqrt() * x0) / (1.0 - a_t).sqrt()
    return a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps, x0


def ddim_sample(denoiser, target_elev, target_az, num_steps: int = 50, seed: int = 0, init_latents=None,
                strength: float = 1.0, drop_mask=None, progress: Progress | None = None,
                noise: torch.Tensor | None = None, clip_x0: bool = False) -> torch.Tensor:
    """Sample target latents.

    Args:
        denoiser: a :class:`~magicboost_core.model.denoiser.MultiViewDenoiser`, or any object with its
            ``model`` (for the codec), ``device``, ``alphas_cumprod`` (the schedule) and ``predict``.
        target_elev, target_az: (N,) degrees, one target view each.
        num_steps: DDIM steps of the full schedule (official 50).
        seed: seeds the starting noise (drawn on the CPU, so the same on every device).
        init_latents: optional (N, C, h, w) clean latents to start from (SDEdit).
        strength: fraction of the schedule to run; < 1 needs ``init_latents``.
        drop_mask: optional (N, A-1) anchor drop mask (AIU).
        progress: ``progress(step, total, x0_pred)`` after each step; ``x0_pred`` = predicted clean latents.
        noise: optional (N, C, h, w) starting noise overriding ``seed``.
        clip_x0: clamp each step's x0 estimate to [-1, 1] (see :func:`ddim_update`).
    Returns: (N, C, h, w) float32 latents on the model's device.
    """
    codec = denoiser.model.codec
    tel = torch.as_tensor(target_elev, dtype=torch.float32).reshape(-1)
    taz = torch.as_tensor(target_az, dtype=torch.float32).reshape(-1)
    n = tel.numel()
    if taz.numel() != n:
        raise ValueError(f"ddim_sample: {n} target elevations but {taz.numel()} azimuths.")
    shape = (n, codec.latent_channels, codec.latent_size, codec.latent_size)
    timesteps = ddim_timesteps(num_steps, strength)
    if strength < 1.0 and init_latents is None:
        raise ValueError("ddim_sample: strength < 1 continues from init_latents (SDEdit); pass init_latents.")
    device = denoiser.device
    if noise is None:
        noise = seeded_randn(shape, torch.Generator().manual_seed(int(seed)), device=device)
    noise = noise.to(device, torch.float32)
    if tuple(noise.shape) != shape:
        raise ValueError(f"ddim_sample: noise must be {shape}, got {tuple(noise.shape)}.")
    acp = denoiser.alphas_cumprod
    if init_latents is None:
        z = noise
    else:
        z0 = init_latents.to(device, torch.float32)
        if tuple(z0.shape) != shape:
            raise ValueError(f"ddim_sample: init_latents must be {shape}, got {tuple(z0.shape)}.")
        z = q_sample(z0, timesteps[0], noise, acp)
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        eps, _ = denoiser.predict(z, torch.full((n,), t, dtype=torch.long), tel, taz, drop_mask=drop_mask)
        eps = eps.float()
        z, x0 = ddim_update(z, eps, float(acp[t]), previous_alpha_cumprod(t, num_steps, acp), clip_x0)
        if progress is not None:
            progress(i + 1, total, x0)
    return z


def nearest_condition_view(cond, elevations, azimuths) -> torch.Tensor:
    """(N,) long index of the condition view of ``cond`` whose viewing direction is closest (great-circle angle
    between the (elevation, azimuth) directions, degrees) to each target (N,) ``elevations`` / ``azimuths``."""
    def direction(el, az):
        el = torch.deg2rad(torch.as_tensor(el, dtype=torch.float64))
        az = torch.deg2rad(torch.as_tensor(az, dtype=torch.float64))
        return torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)

    targets = direction(elevations, azimuths).reshape(-1, 3)
    views = direction(cond.elevations, cond.azimuths).reshape(-1, 3)
    return (targets @ views.T).argmax(1)


def _initial_latents(cond, el, az, init: str, strength: float):
    """(N, C, h, w) float32 clean latents to start SDEdit from, or None for pure noise."""
    if init not in INIT_MODES:
        raise ValueError(f"sample_novel_views: init must be one of {list(INIT_MODES)}, got {init!r}.")
    if init == "noise":
        if strength != 1.0:
            raise ValueError(f"sample_novel_views: strength {strength} < 1 starts from an image; use "
                             "init='nearest_view' (or strength 1 with init='noise').")
        return None
    return cond.anchor_latents[nearest_condition_view(cond, el, az).to(cond.anchor_latents.device)].float()


@torch.no_grad()
def sample_novel_views(model, cond, elevations, azimuths, steps: int = 50, cfg: float = 5.0, seed: int = 0,
                       batch_size: int = 4, progress: Progress | None = None, preview_every: int = 0,
                       use_anchor_cache: bool = True, autocast_dtype: torch.dtype | None = None,
                       clip_x0: bool | None = None, init: str = "noise", strength: float = 1.0) -> torch.Tensor:
    """Novel views of the object described by ``cond`` (official demo: 50 steps, CFG 5).

    Args:
        model: :class:`~magicboost_core.model.bundle.MultiViewModel`; cond: its encoded condition views.
        elevations, azimuths: (N,) degrees of the views to generate.
        batch_size: targets denoised together; the result does not depend on it (noise is drawn for all N
            views from ``seed`` first).
        progress: ``progress(step, total, preview)`` over all batches; ``preview`` is None, or every
            ``preview_every`` steps the current prediction of the first view of the batch, (H, W, 3) [0, 1].
        use_anchor_cache, autocast_dtype: passed to :class:`~magicboost_core.model.denoiser.MultiViewDenoiser`.
        clip_x0: clamp each step's x0 estimate to [-1, 1]; default: on for pixel-space models (where
            [-1, 1] is exactly the image range), off for latent models (official sampler).
        init: "noise" (official: start from pure noise) or "nearest_view": SDEdit from the clean latents of the
            condition view nearest to each target (:func:`nearest_condition_view`), noised to the first of the
            ``int(steps * strength)`` lowest DDIM timesteps.
        strength: SDEdit strength in (0, 1] (only with ``init="nearest_view"``; 1 = start at the top timestep).
    Returns: (N, H, W, 3) float32 CPU images in [0, 1].
    """
    from .codec import PixelCodec
    from .denoiser import MultiViewDenoiser

    el = torch.as_tensor(elevations, dtype=torch.float32).reshape(-1)
    az = torch.as_tensor(azimuths, dtype=torch.float32).reshape(-1)
    if el.numel() != az.numel():
        raise ValueError(f"sample_novel_views: {el.numel()} elevations but {az.numel()} azimuths.")
    if batch_size < 1:
        raise ValueError(f"sample_novel_views: batch_size must be >= 1, got {batch_size}.")
    n = el.numel()
    codec = model.codec
    denoiser = MultiViewDenoiser(model, cond, cfg_scale=cfg, use_anchor_cache=use_anchor_cache,
                                 autocast_dtype=autocast_dtype)
    noise = seeded_randn((n, codec.latent_channels, codec.latent_size, codec.latent_size),
                         torch.Generator().manual_seed(int(seed)))
    clip = isinstance(codec, PixelCodec) if clip_x0 is None else bool(clip_x0)
    steps_per_batch = len(ddim_timesteps(steps, strength))
    init_latents = _initial_latents(cond, el, az, init, strength)
    chunks = [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    total = steps_per_batch * len(chunks)
    out = []
    for ci, (s, e) in enumerate(chunks):
        def report(step, _total, x0, _offset=ci * steps_per_batch):
            if progress is None:
                return
            preview = None
            if preview_every and (step % preview_every == 0 or step == _total):
                preview = codec.decode(x0[:1]).float()[0].permute(1, 2, 0).cpu()
            progress(_offset + step, total, preview)

        z = ddim_sample(denoiser, el[s:e], az[s:e], num_steps=steps, noise=noise[s:e], progress=report,
                        clip_x0=clip, init_latents=None if init_latents is None else init_latents[s:e],
                        strength=strength)
        out.append(codec.decode(z.to(model.dtype)).float().permute(0, 2, 3, 1).cpu())
    return torch.cat(out, 0).clamp(0, 1) if out else torch.zeros(0, codec.image_size, codec.image_size, 3)
