"""Headless stand-ins for a few ComfyUI core nodes, used only by the headless runner (:mod:`.runner`).

They accept the same inputs as the core nodes (``LoadImage``, ``SaveImage``, ``PreviewImage``,
``SaveGLB``) so that a workflow exported from ComfyUI with these nodes also runs headless. They are
not registered with ComfyUI (core ids cannot be overridden there anyway).
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from magicboost_core.validate import write_bytes_atomic

from . import comfy_compat
from .common import Node
from .mesh_nodes import IMAGE_EXTENSIONS, MagicBoostLoadImages, MagicBoostSaveMesh, claim_output_files
from .spec import inp


def _input_images() -> list[str]:
    root = comfy_compat.input_directory()
    if not os.path.isdir(root):
        return []
    return sorted(f for f in os.listdir(root) if f.lower().endswith(IMAGE_EXTENSIONS))


class LoadImage(Node):
    """Headless stand-in for ComfyUI's Load Image (a file in the input folder)."""

    CATEGORY = "image"
    OUTPUTS = (("IMAGE", "IMAGE", "The image."), ("MASK", "MASK", "Its mask, 1 = transparent."))
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):  # the file list is read at each call
        return {"required": {"image": inp(_input_images(), "An image in the input folder.")}}

    def load(self, image):
        return MagicBoostLoadImages().load(path=os.path.join(comfy_compat.input_directory(), image))


def _save_png(images, filename_prefix, output_dir, kind, node="Save Image"):
    """PNG files with ComfyUI's names; names are claimed exclusively (parallel runs keep every file) and
    each file is written to a temporary name and renamed onto its claim."""
    results = []
    for img, (path, subfolder) in zip(images, claim_output_files(node, filename_prefix, ".png", len(images),
                                                                 output_dir)):
        arr = (np.clip(img.detach().cpu().float().numpy(), 0, 1) * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr[..., :3] if arr.shape[-1] >= 3 else arr[..., 0]).save(buf, format="PNG")
        try:
            write_bytes_atomic(path, buf.getvalue(), overwrite=True)  # replaces our own placeholder only
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        results.append({"filename": path.name, "subfolder": subfolder, "type": kind})
    return results


class _OutputNode(Node):
    """A core output node: no outputs, ``save`` writes files and returns ``{"ui": ..., "result": ()}``."""

    FUNCTION = "save"
    OUTPUT_NODE = True


class SaveImage(_OutputNode):
    """Headless stand-in for ComfyUI's Save Image (PNG files in the output folder)."""

    CATEGORY = "image"
    REQUIRED = {"images": inp("IMAGE", "Images to save."),
                "filename_prefix": inp("STRING", "File name prefix.", default="ComfyUI")}

    def save(self, images, filename_prefix="ComfyUI"):
        return {"ui": {"images": _save_png(images, filename_prefix, comfy_compat.output_directory(), "output")},
                "result": ()}


class PreviewImage(SaveImage):  # as in ComfyUI
    """Headless stand-in for ComfyUI's Preview Image (PNG files in a temp folder)."""

    REQUIRED = {"images": inp("IMAGE", "Images to preview.")}

    def save(self, images):
        saved = _save_png(images, "preview", comfy_compat.temp_directory(), "temp", "Preview Image")
        return {"ui": {"images": saved}, "result": ()}


class SaveGLB(_OutputNode):
    """Headless stand-in for ComfyUI's Save GLB."""

    CATEGORY = "3d"
    REQUIRED = {"mesh": inp("MESH", "Mesh to save."),
                "filename_prefix": inp("STRING", "File name prefix.", default="3d/ComfyUI")}

    def save(self, mesh, filename_prefix="3d/ComfyUI"):
        out = MagicBoostSaveMesh().save(mesh, filename_prefix)
        return {"ui": out["ui"], "result": ()}


RUNNER_BUILTINS = {"LoadImage": LoadImage, "SaveImage": SaveImage, "PreviewImage": PreviewImage, "SaveGLB": SaveGLB}

__all__ = ["RUNNER_BUILTINS"]
