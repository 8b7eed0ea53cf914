"""Object masks of condition views: where they come from, and what happens when there is none.

Resolution order (:func:`resolve_view_masks`), first that gives information wins:

1. ``alpha``: the images' own alpha channel (RGBA), unless it is fully opaque;
2. ``input``: a mask passed by the caller (ComfyUI MASK, already converted to 1 = object), unless it
   covers the whole frame or is ComfyUI core Load Image's 64x64 placeholder (:func:`is_placeholder_mask`);
3. ``estimated``: a **border-connected colour key** on a uniform background (:func:`estimate_background_mask`):
   the background colour is the median of the image border; pixels within ``tolerance`` of it that are
   connected to the border are background, everything else is object (so object parts of the background
   colour that are enclosed by the object stay object). Zero123++ / InstantMesh grids have grey or white
   backgrounds, Instant3D white;
4. ``none``: no silhouette information. The masks are then all ones **for compositing only**; a silhouette
   loss must be switched off (:func:`silhouette_available` is False). An all-ones *target* would make the
   mesh grow to fill the frame.

No background-removal network is used (rembg would download u2net at run time).

Conventions: images (A, H, W, 3|4) float in [0, 1]; masks (A, H, W) float in [0, 1], 1 = object.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["MaskResolution", "resolve_view_masks", "estimate_background_mask", "is_placeholder_mask",
           "is_uninformative_mask", "silhouette_available", "MASK_SOURCES", "PLACEHOLDER_MASK_SIZE"]

#: Where resolved masks came from.
MASK_SOURCES = ("alpha", "input", "estimated", "none")
#: ComfyUI core Load Image returns a zero mask of this size for images without alpha.
PLACEHOLDER_MASK_SIZE = 64


@dataclass
class MaskResolution:
    """Resolved masks (A, H, W) float32 in [0, 1] (1 = object), their ``source`` and a human-readable note."""

    masks: torch.Tensor
    source: str
    note: str = ""

    @property
    def has_silhouette(self) -> bool:
        return self.source != "none"


def is_placeholder_mask(mask, image_height: int, image_width: int) -> bool:
    """True for ComfyUI core Load Image's stand-in for "no alpha": an all-zero (1 = transparent convention)
    mask of 64x64 that does not match the image size. ``mask``: (H, W) or (B, H, W[, 1]) tensor."""
    if not isinstance(mask, torch.Tensor):
        return False
    m = mask[..., 0] if mask.dim() == 4 and mask.shape[-1] == 1 else mask
    if m.dim() < 2 or tuple(m.shape[-2:]) != (PLACEHOLDER_MASK_SIZE, PLACEHOLDER_MASK_SIZE):
        return False
    if (image_height, image_width) == (PLACEHOLDER_MASK_SIZE, PLACEHOLDER_MASK_SIZE):
        return False
    return bool((m == 0).all())


def is_uninformative_mask(coverage: torch.Tensor, threshold: float = 0.999) -> bool:
    """True when an object-coverage mask (1 = object) covers every pixel: it says nothing about the silhouette."""
    return bool((coverage >= threshold).all())


def _border(x: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels of the ``width``-pixel frame of ``x`` (H, W, C) -> (N, C)."""
    h, w = x.shape[:2]
    keep = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    keep[:width], keep[-width:], keep[:, :width], keep[:, -width:] = True, True, True, True
    return x[keep]


def _border_connected(candidate: torch.Tensor) -> torch.Tensor:
    """Pixels of ``candidate`` (H, W) bool reachable from the image border through candidate pixels (4-neighbours)."""
    h, w = candidate.shape
    seed = torch.zeros_like(candidate)
    seed[0], seed[-1], seed[:, 0], seed[:, -1] = candidate[0], candidate[-1], candidate[:, 0], candidate[:, -1]
    cand = candidate[None, None].float()
    reached = seed[None, None].float()
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]], device=candidate.device)[None, None]
    for _ in range(h * w):
        grown = reached
        for _ in range(8):  # several dilations between convergence checks
            grown = (F.conv2d(grown, kernel, padding=1) > 0).float() * cand
        if torch.equal(grown, reached):
            break
        reached = grown
    return reached[0, 0] > 0


def estimate_background_mask(image: torch.Tensor, tolerance: float = 0.08, border: int = 2,
                             min_border_agreement: float = 0.9, min_object_fraction: float = 0.002,
                             max_object_fraction: float = 0.95) -> torch.Tensor | None:
    """Object mask (H, W) float32 {0, 1} of one view on a uniform background, or None when the background
    is not uniform enough to key.

    Args:
        image: (H, W, 3) float in [0, 1].
        tolerance: max. Euclidean RGB distance (0-1 scale) of a background pixel from the background colour.
        border: width in pixels of the frame the background colour is measured on.
        min_border_agreement: fraction of frame pixels that must match the background colour.
        min_object_fraction, max_object_fraction: a result outside these bounds is rejected (None).
    """
    rgb = image[..., :3].float()
    h, w = rgb.shape[:2]
    if min(h, w) <= 2 * border:
        return None
    frame = _border(rgb, border)
    bg = frame.median(dim=0).values
    if float(((frame - bg).norm(dim=-1) <= tolerance).float().mean()) < min_border_agreement:
        return None
    background = _border_connected((rgb - bg).norm(dim=-1) <= tolerance)
    obj = (~background).float()
    frac = float(obj.mean())
    if not (min_object_fraction <= frac <= max_object_fraction):
        return None
    return obj


def resolve_view_masks(images: torch.Tensor, masks: torch.Tensor | None = None, estimate: bool = True,
                       tolerance: float = 0.08) -> MaskResolution:
    """Masks of condition views by the order of the module docstring.

    Args:
        images: (A, H, W, 3|4) float in [0, 1].
        masks: optional (A, H, W) object coverage in [0, 1] (1 = object); all-ones counts as absent.
        estimate: allow the background colour key (step 3).
        tolerance: colour-key tolerance (see :func:`estimate_background_mask`).
    Returns: a :class:`MaskResolution` with masks (A, H, W) float32 on ``images``' device.
    """
    a, h, w, c = images.shape
    if c == 4 and not is_uninformative_mask(images[..., 3]):
        return MaskResolution(images[..., 3].float().clamp(0, 1), "alpha", "masks from the images' alpha channel")
    if masks is not None and not is_uninformative_mask(masks):
        return MaskResolution(masks.float().clamp(0, 1), "input", "masks from the mask input")
    if estimate:
        est = [estimate_background_mask(images[i, ..., :3], tolerance) for i in range(a)]
        if all(m is not None for m in est):
            return MaskResolution(torch.stack(est).to(images.device), "estimated",
                                  "no alpha and no mask: masks estimated from the uniform background colour")
        bad = [i for i, m in enumerate(est) if m is None]
        why = f"view(s) {bad} have no uniform background to key"
    else:
        why = "estimation disabled"
    return MaskResolution(torch.ones(a, h, w, device=images.device), "none",
                          f"no alpha, no mask and {why}: silhouette term off (give RGBA views or a MASK)")


def silhouette_available(cond) -> bool:
    """Whether a ``ViewConditioning``'s masks carry silhouette information (False: switch mask losses off)."""
    return cond.mask_source != "none"
