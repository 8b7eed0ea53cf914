"""The diffusion side of refinement behind one small interface.

:class:`Guidance` is what the loop needs from a multi-view model: encode renders to latents (with
gradient), predict noise for a batch of target views (CFG and conditional), decode, and SDEdit a batch
of renders (the Anchor Iterative Update). :class:`MultiViewGuidance` implements it with the pack's
:class:`~magicboost_core.model.MultiViewModel`, its ``MultiViewDenoiser`` and ``ddim_sample``.

Conventions: images (B, 3, S, S) float32 in [0, 1] at ``image_size`` (the codec's input size);
latents (B, C, h, w) float32; elevations/azimuths (B,) degrees; timesteps (B,) int64 in [0, 999].

Official choices followed here (reference §5.2, threestudio refine configs):

* precision: the official refinement keeps the diffusion model's weights in fp32 and runs it under
  Lightning ``16-mixed``, i.e. **fp16 autocast** on CUDA (:data:`REFINE_AUTOCAST_DTYPE`); the weights stay in
  the dtype the model was loaded in (fp32 recommended). ``benchmarks/gpu_check.py`` measures fp32 / bf16 /
  fp16 parity; pass ``autocast_dtype=torch.bfloat16`` where fp16 overflows.
* camera codes of InstantMesh anchors carry the official +20° (:func:`~magicboost_core.geometry.presets.
  refine_code_elevation_offset`): codes at 40/10 while the renders keep the true 20/-10.
* a converted model whose prompt embeddings are zeros is refused (the official always encodes its prompts).
"""
from __future__ import annotations

from dataclasses import replace

import torch

__all__ = ["Guidance", "MultiViewGuidance", "REFINE_AUTOCAST_DTYPE",
           "MissingPromptEmbeddingsError"]

#: Autocast dtype of the UNet on CUDA during refinement (official: Lightning 16-mixed = fp16).
REFINE_AUTOCAST_DTYPE = torch.float16


class MissingPromptEmbeddingsError(ValueError):
    """A converted model without prompt embeddings (zeros) was given to the refinement."""


class Guidance:
    """Interface (duck-typed): see module docstring."""

    image_size: int
    alphas_cumprod: torch.Tensor
    device: torch.device

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, z_t, t, elevation_deg, azimuth_deg, drop_mask=None):
        raise NotImplementedError

    def sdedit(self, images, elevation_deg, azimuth_deg, drop_mask=None, strength: float = 0.1,
               num_steps: int = 50, seed: int = 0) -> torch.Tensor:
        raise NotImplementedError


class MultiViewGuidance(Guidance):
    """Guidance from a :class:`MultiViewModel` conditioned on ``cond`` (a ``ViewConditioning``).

    One ``MultiViewDenoiser`` (anchor K/V cache on) serves SDS and the anchor update; its cache is keyed
    by batch layout, so differing batch sizes are safe (reference §2.2).
    """

    def __init__(self, model, cond, cfg_scale: float = 5.0, autocast: bool | None = None,
                 autocast_dtype: torch.dtype = REFINE_AUTOCAST_DTYPE, code_elevation_offset: float | None = None,
                 allow_zero_prompts: bool = False):
        """``code_elevation_offset``: degrees added to the anchors' elevations in the camera code (default: the
        official value of the matching preset, 20 for InstantMesh, else 0). ``allow_zero_prompts``: accept a
        converted model without prompt embeddings (otherwise :class:`MissingPromptEmbeddingsError`)."""
        from ..geometry.presets import refine_code_elevation_offset
        from ..model.denoiser import MultiViewDenoiser

        info = getattr(model, "info", None)
        if (not allow_zero_prompts and getattr(info, "kind", "") == "official"
                and not getattr(model, "has_prompt_embeddings", True)):
            raise MissingPromptEmbeddingsError(
                "this model was converted without prompt embeddings (zeros); the official refinement always uses "
                "its prompts. Re-run 'magicboost convert' with the text encoder available (see README: "
                "'Using the real Magic-Boost weights')."
            )
        self.model = model
        self.cond = cond
        self.cfg_scale = float(cfg_scale)
        p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        self.device = p.device if p is not None else torch.device("cpu")
        self.autocast = (self.device.type == "cuda") if autocast is None else bool(autocast)
        self.image_size = int(model.codec.image_size)
        self._amp_dtype = autocast_dtype if (self.autocast and self.device.type == "cuda") else None
        if code_elevation_offset is None:
            code_elevation_offset = refine_code_elevation_offset(cond.elevations, cond.azimuths)
        self.code_elevation_offset = float(code_elevation_offset)
        code_cond = cond
        if self.code_elevation_offset:
            code_cond = replace(cond, elevations=torch.as_tensor(cond.elevations, dtype=torch.float32)
                                + self.code_elevation_offset)
        self._sds = MultiViewDenoiser(model, code_cond, cfg_scale=self.cfg_scale, use_anchor_cache=True,
                                      autocast_dtype=self._amp_dtype)
        self.alphas_cumprod = self._sds.alphas_cumprod

    def encode(self, images, generator=None):
        return self.model.codec.encode(images.to(self.device), sample=True, generator=generator).float()

    def decode(self, latents):
        return self.model.codec.decode(latents).float().clamp(0, 1)

    def predict(self, z_t, t, elevation_deg, azimuth_deg, drop_mask=None):
        eps_cfg, eps_cond = self._sds.predict(z_t, t, torch.as_tensor(elevation_deg).float(),
                                              torch.as_tensor(azimuth_deg).float(), drop_mask=drop_mask)
        return eps_cfg.float(), eps_cond.float()

    def sdedit(self, images, elevation_deg, azimuth_deg, drop_mask=None, strength=0.1, num_steps=50, seed=0):
        from ..model.sampling import ddim_sample

        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            z = self.encode(images, generator=gen)
            # The SDS denoiser is reused: its anchor K/V cache is keyed by (CFG branches, batch size), and the
            # anchors' features never depend on the target or the drop mask (reference §2.2-2.3).
            out = ddim_sample(self._sds, torch.as_tensor(elevation_deg).float().cpu(),
                              torch.as_tensor(azimuth_deg).float().cpu(), num_steps=num_steps, seed=int(seed),
                              init_latents=z, strength=strength,
                              drop_mask=None if drop_mask is None else drop_mask.to(self.device))
            return self.decode(out.float())
