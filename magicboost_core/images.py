"""Multi-view image helpers on torch tensors in ComfyUI's IMAGE layout.

Conventions: images are **[B, H, W, C] float in [0, 1]** (C = 3 RGB or 4 RGBA), row 0 = top, on any
device; a multi-view set is a batch with one view per item, in the preset's anchor order.
Alpha is 1 = opaque. ComfyUI MASK tensors are the opposite (**1 = masked/transparent**, [B, H, W] or
[H, W]) — convert with :func:`mask_from_comfy` / :func:`mask_to_comfy`.

Image files are read with :func:`read_image_file` (regular files only, size and pixel caps against
decompression bombs, EXIF orientation applied, 16-bit PNGs scaled by 65535 instead of clipped), a set of
view files with :func:`read_view_files`, and a file's size from its header with :func:`read_image_size`.

Grids: coarse generators emit their views tiled in one image, row-major in anchor order: Instant3D
2 x 2 (rows x cols), Zero123++ v1.2 / InstantMesh 3 rows x 2 columns of 320 px (960 x 640).
"""
from __future__ import annotations

import io
import math
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .validate import readable_error

__all__ = [
    "split_grid",
    "tile_grid",
    "composite_on_background",
    "mask_from_comfy",
    "mask_to_comfy",
    "resize_views",
    "to_pil",
    "from_pil",
    "save_image_grid",
    "ImageFileError",
    "read_image_file",
    "read_image_size",
    "read_view_files",
    "pil_to_rgba",
    "max_image_pixels",
]

#: Default cap on width x height of an image file (8192 x 8192); ``MAGICBOOST_MAX_IMAGE_PIXELS`` overrides.
MAX_IMAGE_PIXELS = 8192 * 8192
IMAGE_FORMATS_TEXT = "PNG, JPG, WEBP or BMP"


@readable_error
class ImageFileError(ValueError):
    """An image file cannot be used: not an image, truncated, or too large."""


def max_image_pixels() -> int:
    """The pixel cap for image files (:data:`MAX_IMAGE_PIXELS` or ``$MAGICBOOST_MAX_IMAGE_PIXELS``)."""
    from .validate import finite_number

    env = os.environ.get("MAGICBOOST_MAX_IMAGE_PIXELS", "").strip()
    return int(finite_number(env, "MAGICBOOST_MAX_IMAGE_PIXELS", lo=1, integer=True)) if env else MAX_IMAGE_PIXELS


def pil_to_rgba(im) -> tuple[np.ndarray, bool]:
    """A PIL image -> ((H, W, 4) float32 RGBA in [0, 1], whether it has an alpha channel).

    16-bit and 32-bit integer grey images (PNG mode ``I;16`` / ``I``) are scaled by their bit depth
    (65535 when any value exceeds 255) instead of being clipped to 255 by ``convert``; float images
    (mode ``F``) are taken as [0, 1].
    """
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if mode == "F":
            g = a
        else:
            scale = 65535.0 if mode.startswith("I;16") or (a.size and a.max() > 255) else 255.0
            g = a / scale
        g = np.clip(np.nan_to_num(g, nan=0.0), 0.0, 1.0).astype(np.float32)
        return np.concatenate([np.repeat(g[..., None], 3, -1), np.ones_like(g)[..., None]], -1), False
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    return np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0, has_alpha


def read_image_file(path, what: str = "image") -> tuple[np.ndarray, bool]:
    """Read one image file safely: ((H, W, 4) float32 RGBA in [0, 1], row 0 = top, has_alpha).

    Only regular files up to the image size cap (see :mod:`.validate`), at most :func:`max_image_pixels`
    pixels (checked from the header, before decoding: a 100000 x 100000 header is refused, not
    allocated); EXIF orientation applied. Raises :class:`ImageFileError` (or
    :class:`~.validate.InputFileError` for a missing / non-regular / oversized file) naming the file.
    """
    from PIL import ImageOps

    with _image_header(path, what) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
    return pil_to_rgba(im)


def read_image_size(path, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file as :func:`read_image_file` returns it (EXIF rotation included),
    from its header alone: nothing is decoded. The same checks and errors as :func:`read_image_file`."""
    with _image_header(path, what) as im:
        w, h = im.size
        rotated = im.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that swap width and height
    return (h, w) if rotated else (w, h)


def read_view_files(paths, what: str = "view image") -> torch.Tensor:
    """(A, H, W, 4) float RGBA in [0, 1] from A image files (:func:`read_image_file` each; alpha 1 where a
    file has none). Raises ValueError when the files differ in size."""
    imgs = [torch.from_numpy(read_image_file(p, what)[0]) for p in paths]
    sizes = {tuple(i.shape[:2]) for i in imgs}
    if len(sizes) != 1:
        raise ValueError(f"the view images have different sizes {sorted(sizes)}; resize them to one size first.")
    return torch.stack(imgs)


@contextmanager
def _image_header(path, what: str):
    """The PIL image of a file, opened (header read, pixels not decoded) after the file and pixel-count
    checks; decoding errors inside the ``with`` block become :class:`ImageFileError` naming the file."""
    from PIL import Image, UnidentifiedImageError

    from .validate import read_limited

    data = read_limited(path, what, "image")
    if not data:
        raise ImageFileError(f"{what} '{path}' is empty (0 bytes); give a {IMAGE_FORMATS_TEXT} image.")
    cap = max_image_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > cap:
                raise ImageFileError(
                    f"{what} '{path}' is {w} x {h} pixels, more than the {cap} allowed; resize it (views are used at "
                    "a few hundred pixels) or raise MAGICBOOST_MAX_IMAGE_PIXELS.")
            yield im
    except ImageFileError:
        raise
    except Image.DecompressionBombError:
        raise ImageFileError(f"{what} '{path}' declares an enormous size (a decompression bomb?); it is refused. "
                             "Give a normal image.") from None
    except UnidentifiedImageError:
        raise ImageFileError(f"{what} '{path}' is not an image file this pack can read; give a {IMAGE_FORMATS_TEXT} "
                             "image (check that the file is not text or damaged).") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageFileError(f"{what} '{path}' is damaged or truncated and cannot be decoded ({e}); export or "
                             "download it again.") from None


def _as_batch(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    t = torch.as_tensor(images)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name} must be [B, H, W, C] (or [H, W, C]) with C in 1, 3, 4; got {tuple(t.shape)}. "
                         "ComfyUI IMAGE tensors are channel-last.")
    if not t.is_floating_point():
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    return t


def split_grid(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Cut one tiled image into its views.

    Args: image: (H, W, C) or (1, H, W, C); or a single mask / alpha (H, W); rows, cols: the layout.
    Returns: (rows * cols, H / rows, W / cols, C), or (rows * cols, h, w) for an (H, W) input; row-major
        (left to right, then top to bottom).
    Raises ValueError when H is not divisible by rows or W by cols (names the sizes and layout).
    """
    if torch.as_tensor(image).ndim == 2:
        return split_grid(torch.as_tensor(image)[..., None], rows, cols)[..., 0]
    t = _as_batch(image, "image")
    if t.shape[0] != 1:
        raise ValueError(f"split_grid takes one tiled image; got a batch of {t.shape[0]}. Split each separately.")
    if rows < 1 or cols < 1:
        raise ValueError(f"grid layout must be at least 1 x 1; got {rows} x {cols}.")
    _, H, W, C = t.shape
    if H % rows or W % cols:
        raise ValueError(
            f"A {H} x {W} (H x W) image does not divide into a {rows} x {cols} (rows x cols) grid: "
            f"{H} / {rows} and {W} / {cols} must be whole numbers. Check the view preset / layout or crop the image."
        )
    h, w = H // rows, W // cols
    return t[0].reshape(rows, h, cols, w, C).permute(0, 2, 1, 3, 4).reshape(rows * cols, h, w, C)


def tile_grid(views: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`split_grid`: (rows * cols, h, w, C) views -> (1, rows * h, cols * w, C)."""
    v = _as_batch(views, "views")
    if v.shape[0] != rows * cols:
        raise ValueError(f"a {rows} x {cols} grid needs {rows * cols} views; got {v.shape[0]}.")
    _, h, w, C = v.shape
    return v.reshape(rows, cols, h, w, C).permute(0, 2, 1, 3, 4).reshape(1, rows * h, cols * w, C)


def mask_from_comfy(mask: torch.Tensor) -> torch.Tensor:
    """ComfyUI MASK (1 = masked/transparent) [B, H, W] or [H, W] -> alpha (1 = opaque) [B, H, W]."""
    m = torch.as_tensor(mask)
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 3:
        raise ValueError(f"a ComfyUI MASK must be [B, H, W] or [H, W]; got {tuple(m.shape)}.")
    return (1.0 - m.float()).clamp(0, 1)


def mask_to_comfy(alpha: torch.Tensor) -> torch.Tensor:
    """Alpha (1 = opaque) [B, H, W] / [B, H, W, 1] / [H, W] -> ComfyUI MASK (1 = masked) [B, H, W]."""
    return mask_from_comfy(alpha)  # the same flip; both directions 1 - x


def composite_on_background(image: torch.Tensor, alpha: torch.Tensor | None = None,
                            color: Sequence[float] | float = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Blend views over a solid background: ``rgb * a + color * (1 - a)``.

    Args:
        image: [B, H, W, 4] RGBA (alpha taken from channel 3) or [B, H, W, 3] RGB with ``alpha``.
        alpha: [B, H, W] or [B, H, W, 1], 1 = opaque (a ComfyUI MASK must go through
            :func:`mask_from_comfy` first); overrides an RGBA image's own alpha.
        color: RGB background in [0, 1] (or one grey value); white by default, as the official pipeline.
    Returns: [B, H, W, 3].
    """
    t = _as_batch(image, "image")
    if alpha is None:
        if t.shape[-1] != 4:
            raise ValueError(f"composite_on_background needs RGBA images or an alpha; got {t.shape[-1]} channels.")
        a = t[..., 3:4]
    else:
        a = torch.as_tensor(alpha, dtype=t.dtype, device=t.device)
        if a.ndim == 2:
            a = a[None]
        if a.ndim == 3:
            a = a[..., None]
        if a.shape[1:3] != t.shape[1:3] or a.shape[0] not in (1, t.shape[0]):
            raise ValueError(f"alpha {tuple(a.shape)} does not match images {tuple(t.shape)}.")
    rgb = t[..., :3] if t.shape[-1] >= 3 else t[..., :1].expand(*t.shape[:3], 3)
    bg = torch.as_tensor(color, dtype=t.dtype, device=t.device).reshape(-1)
    if bg.numel() == 1:
        bg = bg.expand(3)
    if bg.numel() != 3:
        raise ValueError(f"background color must be 1 or 3 numbers; got {bg.numel()}.")
    return rgb * a + bg * (1.0 - a)


def resize_views(images: torch.Tensor, size, mode: str = "area") -> torch.Tensor:
    """Resize [B, H, W, C] views to ``size`` (int for square, or (height, width)).

    ``mode``: "area" (box filter, best for downsampling), "bilinear" (antialiased when shrinking),
    "bicubic" (antialiased when shrinking, clamped to [0, 1]) or "nearest" (masks, ids).
    """
    t = _as_batch(images)
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"size must be a positive int or (height, width); got {size!r}.")
    if hw == tuple(t.shape[1:3]):
        return t
    x = t.permute(0, 3, 1, 2)
    shrink = hw[0] < t.shape[1] or hw[1] < t.shape[2]
    if mode == "area":
        y = F.interpolate(x, size=hw, mode="area")
    elif mode in ("bilinear", "bicubic"):
        y = F.interpolate(x, size=hw, mode=mode, align_corners=False, antialias=shrink)
    elif mode == "nearest":
        y = F.interpolate(x, size=hw, mode="nearest-exact")
    else:
        raise ValueError(f"mode must be 'area', 'bilinear', 'bicubic' or 'nearest'; got {mode!r}.")
    return y.permute(0, 2, 3, 1).clamp(0, 1)


def to_pil(images: torch.Tensor):
    """(H, W, C) -> one 8-bit PIL image; (B, H, W, C) -> list of PIL images (C 1 -> L, 3 -> RGB, 4 -> RGBA)."""
    from PIL import Image

    single = torch.as_tensor(images).ndim == 3
    t = _as_batch(images)
    arr = (t.detach().cpu().float().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[-1]]
    pics = [Image.fromarray(a[..., 0] if mode == "L" else a, mode=mode) for a in arr]
    return pics[0] if single else pics


def from_pil(images, mode: str = "RGB") -> torch.Tensor:
    """PIL image(s) -> [B, H, W, C] float32 in [0, 1]. ``mode``: "RGB", "RGBA" or "L" (C = 1).
    All images must share one size."""
    if mode not in ("RGB", "RGBA", "L"):
        raise ValueError(f"mode must be 'RGB', 'RGBA' or 'L'; got {mode!r}.")
    pics = list(images) if isinstance(images, (list, tuple)) else [images]
    if not pics:
        raise ValueError("from_pil: no images given.")
    sizes = {p.size for p in pics}
    if len(sizes) > 1:
        raise ValueError(f"from_pil: images have different sizes {sorted(sizes)}; resize them first.")
    arrs = []
    for p in pics:
        a = np.asarray(p.convert(mode), dtype=np.float32) / 255.0
        arrs.append(a[..., None] if a.ndim == 2 else a)
    return torch.from_numpy(np.stack(arrs))


def save_image_grid(images: torch.Tensor, path, ncols: int | None = None, overwrite: bool = False,
                    padding: int = 0, pad_value: float = 1.0) -> Path:
    """Save views [B, H, W, C] as one PNG grid (row-major, ``ncols`` columns, default ceil(sqrt(B))).

    Empty cells and ``padding`` pixels between cells are ``pad_value``. Written atomically; refuses to
    replace an existing file unless ``overwrite=True`` (:class:`~.validate.OutputExistsError`).
    """
    from .validate import write_bytes_atomic

    t = _as_batch(images).detach().cpu().float()
    B, h, w, C = t.shape
    ncols = int(ncols) if ncols else max(1, math.ceil(math.sqrt(B)))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1; got {ncols}.")
    nrows = math.ceil(B / ncols)
    p = int(padding)
    canvas = torch.full((nrows * h + (nrows - 1) * p, ncols * w + (ncols - 1) * p, C), float(pad_value))
    for i in range(B):
        r, c = divmod(i, ncols)
        canvas[r * (h + p): r * (h + p) + h, c * (w + p): c * (w + p) + w] = t[i]
    buf = io.BytesIO()
    to_pil(canvas).save(buf, format="PNG")
    return write_bytes_atomic(Path(path), buf.getvalue(), overwrite)
