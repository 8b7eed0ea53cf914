"""Condition (anchor) views -> everything the multi-view UNet is conditioned on (reference §2, §5.2).

:func:`encode_views` composites the anchor images on the background, resizes them to the codec's
resolution, encodes them to clean latents (posterior sample, as the official code does), CLIP-encodes the
reference view (anchor 0) and builds the condition-strength labels.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..geometry.camera_vector import condition_strength_labels
from ..masks import resolve_view_masks
from .codec import resize_square

__all__ = ["ViewConditioning", "ViewInputError", "encode_views", "MIN_VIEW_SIZE", "novel_view_conditioning",
           "PromptOverride", "with_novel_view_prompts"]

MIN_VIEW_SIZE = 16


class ViewInputError(ValueError):
    """Condition views given in a shape, range or count the model cannot use."""


@dataclass
class ViewConditioning:
    """Encoded condition views. ``A`` anchors; anchor 0 is the reference view.

    Attributes:
        images: (A, S, S, 3) float32 CPU in [0, 1], composited on the background, S = codec image_size.
        masks: (A, S, S) float32 CPU in [0, 1] (1 = object).
        elevations, azimuths: (A,) float32 degrees (z-up world, see geometry.camera).
        anchor_latents: (A, C, h, w) clean latents (codec scale applied), model device/dtype.
        image_tokens: (T, C_img) image-prompt tokens of the reference view, model device/dtype; or
            (1 + A, T, C_img) per frame (target, anchors), as :func:`novel_view_conditioning` makes them.
        labels: (1 + A, 2) float32 condition-strength labels (frame 0 = target, then anchors).
        mask_source: where ``masks`` came from: "alpha" | "input" | "estimated" | "none" (see
            :mod:`magicboost_core.masks`); "none" = all ones, for compositing only: no silhouette loss.
        anchor_image_tokens: (A, T, C_img) every anchor's own image tokens (novel-view sampling), or None.
    """

    images: torch.Tensor
    masks: torch.Tensor
    elevations: torch.Tensor
    azimuths: torch.Tensor
    anchor_latents: torch.Tensor
    image_tokens: torch.Tensor
    labels: torch.Tensor
    mask_source: str = "input"
    anchor_image_tokens: torch.Tensor | None = None

    @property
    def num_anchors(self) -> int:
        return int(self.anchor_latents.shape[0])

    def to(self, device=None, dtype=None) -> "ViewConditioning":
        """Latents and tokens moved/cast (images, masks, angles and labels stay float32 CPU)."""
        mv = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return replace(self, anchor_latents=mv(self.anchor_latents), image_tokens=mv(self.image_tokens),
                       anchor_image_tokens=mv(self.anchor_image_tokens))


def _as_float_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        is_uint8 = x.dtype == np.uint8
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        is_uint8 = x.dtype == torch.uint8
        t = x.detach()
    else:
        raise ViewInputError(f"{name}: expected a torch tensor or numpy array, got {type(x).__name__}.")
    t = t.to("cpu", torch.float32)
    return t / 255.0 if is_uint8 else t


def _check_images(images: torch.Tensor) -> None:
    if images.dim() == 3 and images.shape[-1] in (3, 4):
        raise ViewInputError(
            f"images: got one image {tuple(images.shape)}; stack the views into (A, H, W, 3|4), e.g. images[None]."
        )
    if images.dim() != 4:
        raise ViewInputError(f"images: expected (A, H, W, 3|4) [0, 1], got shape {tuple(images.shape)}.")
    if images.shape[-1] not in (3, 4):
        hint = " (channels-first? use images.permute(0, 2, 3, 1))" if images.shape[1] in (3, 4) else ""
        raise ViewInputError(
            f"images: the last axis must hold 3 (RGB) or 4 (RGBA) channels, got {images.shape[-1]}{hint}."
        )
    a, h, w, _ = images.shape
    if h != w:
        raise ViewInputError(f"images: views must be square, got {h}x{w}; crop or pad them to square first.")
    if h < MIN_VIEW_SIZE:
        raise ViewInputError(
            f"images: views of {h}x{w} px are too small; give at least {MIN_VIEW_SIZE}x{MIN_VIEW_SIZE}.")
    if not torch.isfinite(images).all():
        raise ViewInputError("images: contain NaN or infinite values; check the image loading/decoding.")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ViewInputError(
            f"images: values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]"
            + ("; divide 0-255 images by 255." if hi > 1.5 else ".")
        )


def _angles(x, a: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
    if t.numel() != a:
        raise ViewInputError(f"{name}: {t.numel()} value(s) for {a} view(s); give one angle (degrees) per view.")
    if not torch.isfinite(t).all():
        raise ViewInputError(f"{name}: contains NaN or infinite values.")
    return t


@torch.no_grad()
def encode_views(model, images, elevations, azimuths, masks=None, background=(1.0, 1.0, 1.0),
                 sample_posterior: bool = True, generator: torch.Generator | None = None,
                 strength_tex: float = 0.0, strength_geo: float = 0.0, estimate_masks: bool = True) -> ViewConditioning:
    """Encode condition views for ``model`` (a :class:`~magicboost_core.model.bundle.MultiViewModel`).

    Args:
        images: (A, H, W, 3|4) float in [0, 1] (or uint8 0-255), square, H >= 16; anchor 0 = reference view.
            RGBA is composited on ``background`` with alpha as the mask.
        elevations, azimuths: (A,) degrees, one per view.
        masks: optional (A, H, W) [0, 1] object coverage (1 = object); for RGB it is used to composite.
            Masks are resolved by :func:`magicboost_core.masks.resolve_view_masks`: alpha -> ``masks`` ->
            estimated from a uniform background -> none (``mask_source`` says which; never an all-ones target).
        sample_posterior: draw the VAE posterior sample (official) instead of its mean.
        generator: seeds the posterior sample.
        strength_tex, strength_geo: condition-strength of anchors 1..A-1 (refine configs: 0, labels (500, 0.5)).
        estimate_masks: allow the background colour key for views without alpha and mask.
    """
    imgs = _as_float_tensor(images, "images")
    _check_images(imgs)
    a, h, w, c = imgs.shape
    el = _angles(elevations, a, "elevations")
    az = _angles(azimuths, a, "azimuths")
    rgb = imgs[..., :3]
    m = None
    if masks is not None:
        m = _as_float_tensor(masks, "masks")
        if m.dim() == 4 and m.shape[-1] == 1:
            m = m[..., 0]
        if tuple(m.shape) != (a, h, w):
            raise ViewInputError(f"masks: expected shape {(a, h, w)} to match the images, got {tuple(m.shape)}.")
        if not torch.isfinite(m).all() or float(m.min()) < -1e-3 or float(m.max()) > 1.0 + 1e-3:
            raise ViewInputError("masks: values must be finite and lie in [0, 1].")
    resolved = resolve_view_masks(imgs, m, estimate=estimate_masks)
    alpha = resolved.masks
    # Official: RGBA views are composited on white with their alpha; plain RGB views enter as given
    # (Zero123++ grey backgrounds included); an explicit mask composites RGB views.
    composite_alpha = imgs[..., 3] if c == 4 else (alpha if resolved.source == "input" else torch.ones(a, h, w))
    bg = torch.as_tensor(background, dtype=torch.float32).reshape(1, 1, 1, 3)
    comp = (rgb * composite_alpha[..., None] + bg * (1.0 - composite_alpha[..., None])).clamp(0, 1)

    codec, enc = model.codec, model.image_encoder
    size = codec.image_size
    chw = comp.permute(0, 3, 1, 2)
    small = resize_square(chw, size).clamp(0, 1)
    small_mask = resize_square(alpha[:, None], size)[:, 0].clamp(0, 1)

    p = next(model.unet.parameters())
    device, dtype = p.device, p.dtype
    latents = codec.encode(small.to(device), sample=sample_posterior, generator=generator).to(dtype)
    tokens = enc(chw.to(device)).to(dtype)  # (A, T, C): every anchor's own tokens (novel-view demo)
    labels = condition_strength_labels(a, strength_tex, strength_geo)
    return ViewConditioning(images=small.permute(0, 2, 3, 1).contiguous(), masks=small_mask.contiguous(),
                            elevations=el, azimuths=az, anchor_latents=latents, image_tokens=tokens[0], labels=labels,
                            mask_source=resolved.source, anchor_image_tokens=tokens)


def novel_view_conditioning(cond: ViewConditioning, per_anchor_tokens: bool = True,
                            zero_labels: bool = True) -> ViewConditioning:
    """``cond`` as the official novel-view demo conditions the model (reference §2.5, §2.7, §4).

    ``per_anchor_tokens``: the target gets anchor 0's image tokens and each anchor its own (image_tokens
    becomes (1 + A, T, C)); needs ``cond.anchor_image_tokens``. ``zero_labels``: condition-strength labels zero
    for every frame (the demo), instead of the refinement's (500, 0.5) on side anchors.
    """
    out = cond
    if per_anchor_tokens:
        if cond.anchor_image_tokens is None:
            raise ViewInputError("these views carry only the reference view's image tokens; re-encode them with "
                                 "encode_views to get every anchor's own tokens.")
        at = cond.anchor_image_tokens
        out = replace(out, image_tokens=torch.cat([at[:1], at], dim=0))
    if zero_labels:
        out = replace(out, labels=torch.zeros_like(cond.labels))
    return out


class PromptOverride:
    """``model`` seen with other prompt embeddings (``text_cond`` / ``text_uncond``, (L, D) each); every other
    attribute is the model's. Lets the novel-view paths use the demo prompts with the shared denoiser."""

    def __init__(self, model, text_cond: torch.Tensor, text_uncond: torch.Tensor):
        self._model = model
        self.text_cond = text_cond
        self.text_uncond = text_uncond

    def __getattr__(self, name):
        return getattr(self._model, name)


def with_novel_view_prompts(model):
    """``model`` with its novel-view prompt embeddings ("a , 3d asset" and the demo's negative prompt) when it
    stores them (models converted with a tokenizer), else ``model`` itself (refinement prompts)."""
    pair = model.novel_view_text()
    return model if pair is None else PromptOverride(model, *pair)
