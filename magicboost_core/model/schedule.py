"""The official noise schedule and DDIM timesteps (reference §1.1).

* 1000 training steps, SD ``scaled_linear`` betas: ``linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2`` in
  float64; ``alphas_cumprod = cumprod(1 - betas)``.
* eps-parameterisation; DDIM "uniform" discretisation: for S steps, ``c = 1000 // S`` and the timesteps are
  ``{0, c, 2c, ...} + 1`` (S=50 -> 1, 21, ..., 981). The lowest step's "previous" alpha is ``alphas_cumprod[0]``
  (not 1.0).
* SDEdit with ``strength`` keeps the lowest ``int(S * strength)`` of those steps (AIU: S=50, strength 0.1 ->
  81, 61, 41, 21, 1).
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "NUM_TRAIN_TIMESTEPS", "BETA_START", "BETA_END", "SCHEDULE_BUFFER_NAMES",
    "betas", "alphas_cumprod", "ddim_timesteps", "ddim_step_size", "previous_alpha_cumprod",
    "q_sample", "official_schedule_buffers", "make_ddim_scheduler", "seeded_randn",
]

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012

#: Buffers an LDM ``LatentDiffusion`` checkpoint carries (reference §3); the converter checks and drops them.
SCHEDULE_BUFFER_NAMES = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)

_CACHE: dict[str, torch.Tensor] = {}


def betas() -> torch.Tensor:
    """(1000,) float64 betas of the official schedule (a fresh copy)."""
    if "betas" not in _CACHE:
        _CACHE["betas"] = torch.linspace(
            math.sqrt(BETA_START), math.sqrt(BETA_END), NUM_TRAIN_TIMESTEPS, dtype=torch.float64
        ) ** 2
    return _CACHE["betas"].clone()


def alphas_cumprod() -> torch.Tensor:
    """(1000,) float64 ``ᾱ_t = prod_{s<=t} (1 - beta_s)`` (a fresh copy)."""
    if "alphas_cumprod" not in _CACHE:
        _CACHE["alphas_cumprod"] = torch.cumprod(1.0 - betas(), dim=0)
    return _CACHE["alphas_cumprod"].clone()


def ddim_step_size(num_steps: int) -> int:
    """``c = 1000 // num_steps``: the distance between two DDIM timesteps."""
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"num_steps must be an integer in [1, {NUM_TRAIN_TIMESTEPS}], got {num_steps!r}.")
    return NUM_TRAIN_TIMESTEPS // num_steps


def ddim_timesteps(num_steps: int = 50, strength: float = 1.0) -> list[int]:
    """Official DDIM timesteps, **descending** (the order they are visited).

    ``num_steps=50`` -> [981, 961, ..., 21, 1]; ``strength`` in (0, 1] keeps the ``int(num_steps * strength)``
    lowest ones (SDEdit): ``ddim_timesteps(50, 0.1) == [81, 61, 41, 21, 1]``.
    """
    c = ddim_step_size(num_steps)
    if not (isinstance(strength, (int, float)) and 0.0 < float(strength) <= 1.0):
        raise ValueError(f"strength must be in (0, 1], got {strength!r}.")
    full = [i * c + 1 for i in range(num_steps)]
    n = int(num_steps * float(strength))
    if n < 1:
        raise ValueError(
            f"strength {strength} with {num_steps} steps leaves no denoising step (int({num_steps}*{strength}) = 0); "
            "raise the strength or the number of steps."
        )
    return full[:n][::-1]


def previous_alpha_cumprod(t: int, num_steps: int, acp: torch.Tensor | None = None) -> float:
    """``ᾱ`` of the DDIM step after ``t``: ``ᾱ[t - c]``, or ``ᾱ[0]`` when ``t - c < 0`` (official, not 1.0)."""
    acp = alphas_cumprod() if acp is None else acp
    prev = int(t) - ddim_step_size(num_steps)
    return float(acp[prev]) if prev >= 0 else float(acp[0])


def seeded_randn(shape, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise drawn with ``generator`` on **its** device, then moved to ``device``.

    Drawing on the generator's device (CPU for ``torch.Generator()``) makes a seed give the same noise whatever
    device the model runs on.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    x = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=torch.float32)
    return x.to(device=device if device is not None else gen_device, dtype=dtype)


def q_sample(z0: torch.Tensor, t, noise: torch.Tensor, acp: torch.Tensor | None = None) -> torch.Tensor:
    """Forward diffusion ``z_t = sqrt(ᾱ_t) z0 + sqrt(1 - ᾱ_t) noise``.

    ``z0``, ``noise``: (B, ...) same shape; ``t``: int or (B,) integer tensor. Coefficients are taken in float64
    and applied in ``z0``'s dtype.
    """
    acp = alphas_cumprod() if acp is None else acp.to(torch.float64)
    t = torch.as_tensor(t, dtype=torch.long, device="cpu").reshape(-1)
    a = acp[t]
    shape = (-1,) + (1,) * (z0.dim() - 1)
    sa = a.sqrt().to(device=z0.device, dtype=z0.dtype).reshape(shape)
    sb = (1.0 - a).sqrt().to(device=z0.device, dtype=z0.dtype).reshape(shape)
    return sa * z0 + sb * noise


def official_schedule_buffers() -> dict[str, torch.Tensor]:
    """The 12 schedule buffers an official LDM checkpoint stores (``register_schedule``, v_posterior 0),
    float64, (1000,) each. Used to check a checkpoint's buffers against this schedule."""
    b = betas()
    acp = alphas_cumprod()
    acp_prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
    post_var = b * (1.0 - acp_prev) / (1.0 - acp)
    return {
        "betas": b,
        "alphas_cumprod": acp,
        "alphas_cumprod_prev": acp_prev,
        "sqrt_alphas_cumprod": acp.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - acp).sqrt(),
        "log_one_minus_alphas_cumprod": torch.log(1.0 - acp),
        "sqrt_recip_alphas_cumprod": (1.0 / acp).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / acp - 1.0).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": torch.log(post_var.clamp(min=1e-20)),
        "posterior_mean_coef1": b * acp_prev.sqrt() / (1.0 - acp),
        "posterior_mean_coef2": (1.0 - acp_prev) * (1.0 - b).sqrt() / (1.0 - acp),
    }


def make_ddim_scheduler():
    """A diffusers ``DDIMScheduler`` configured to match this schedule and the official DDIM sampler."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_start=BETA_START,
        beta_end=BETA_END,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )
