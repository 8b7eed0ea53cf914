"""model room of the Magic-Boost engine: the multi-view diffusion model and everything around it.

Main entry points (imported lazily, so ``import magicboost_core.model`` stays cheap):

* :class:`MultiViewModel` (``bundle``) - UNet + codec + image encoder + prompt embeddings; ``from_pretrained``,
  ``save_pretrained``; :func:`load_demo_model`, :func:`build_demo_model`.
* :func:`encode_views` / :class:`ViewConditioning` (``conditioning``) - condition views -> latents, tokens, labels.
* :class:`MultiViewDenoiser` (``denoiser``) - CFG noise prediction for arbitrary target cameras.
* :func:`ddim_sample`, :func:`sample_novel_views` (``sampling``).
* schedule helpers (``schedule``), codecs (``codec``), encoders (``image_encoder``, ``text_encoder``),
  :func:`convert_official_checkpoint` (``convert_checkpoint``), the UNet (``unet``, ``config``).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "MultiViewModel": "bundle", "ModelInfo": "bundle", "ModelFormatError": "bundle",
    "DemoModelMissingError": "bundle", "demo_model_dir": "bundle", "load_demo_model": "bundle",
    "build_demo_model": "bundle", "default_demo_unet_config": "bundle",
    "attach_external_encoders": "bundle",
    "ViewConditioning": "conditioning", "ViewInputError": "conditioning", "encode_views": "conditioning",
    "MultiViewDenoiser": "denoiser",
    "ddim_sample": "sampling", "sample_novel_views": "sampling",
    "alphas_cumprod": "schedule", "betas": "schedule", "ddim_timesteps": "schedule", "q_sample": "schedule",
    "make_ddim_scheduler": "schedule", "seeded_randn": "schedule",
    "LatentCodec": "codec", "SDVAECodec": "codec", "SDVAEConfig": "codec", "PixelCodec": "codec",
    "CLIPImageEncoder": "image_encoder", "CLIPVisionSpec": "image_encoder", "PatchImageEncoder": "image_encoder",
    "encode_prompts": "text_encoder", "REFINE_PROMPT": "text_encoder", "REFINE_NEGATIVE_PROMPT": "text_encoder",
    "NOVEL_VIEW_PROMPT": "text_encoder", "NOVEL_VIEW_NEGATIVE_PROMPT": "text_encoder",
    "convert_official_checkpoint": "convert_checkpoint", "ConvertError": "convert_checkpoint",
    "WeightsError": "weights", "load_weights_file": "weights",
    "MultiViewUNet": "unet", "AnchorCache": "unet", "MultiViewUNetConfig": "config",
    "convert_official_unet": "convert_unet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
