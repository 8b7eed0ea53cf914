"""Load / Save Mesh, Load Images, Render Views and the MESH <-> TRIMESH converters."""
from __future__ import annotations

import os

from . import comfy_compat
from .common import (CAMERAS, CATEGORY, NodeInputError, meshes_from_input, meshes_to_output, to_comfy_image)
from .engine import PACK_ROOT, core
from .spec import file_fingerprint, inp

MESH_EXTENSIONS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
NO_FILE = "(none)"


def _input_files(subfolder: str, extensions) -> list[str]:
    root = os.path.join(comfy_compat.input_directory(), subfolder)
    if not os.path.isdir(root):
        return []
    found = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(extensions):
                found.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(found)


def resolve_input_path(path: str) -> str | None:
    """An absolute path, or a relative one looked up in the input folder, then the pack folder (so shipped
    workflows can name ``workflows/inputs/...``), then the working directory."""
    path = os.path.expanduser(path.strip().strip('"'))
    if os.path.isabs(path):
        return path if os.path.exists(path) else None
    for base in (comfy_compat.input_directory(), str(PACK_ROOT), os.getcwd()):
        full = os.path.join(base, path)
        if os.path.exists(full):
            return os.path.abspath(full)
    return None


def _pick_file(node, file_input, file_value, path_value, subfolder):
    if path_value and path_value.strip():
        full = resolve_input_path(path_value)
        if full is None:
            raise NodeInputError(node, "path", f"file {path_value!r} not found (looked in the input folder, the "
                                 "Magic-Boost pack folder and the working directory).",
                                 "Give an absolute path or a path relative to one of those folders.")
        return full
    if not file_value or file_value == NO_FILE:
        raise NodeInputError(node, file_input, "no file chosen.",
                             f"Put a file into ComfyUI's input/{subfolder} folder and pick it, or fill in 'path'.")
    full = os.path.join(comfy_compat.input_directory(), subfolder, file_value)
    if not os.path.isfile(full):
        raise NodeInputError(node, file_input, f"{file_value!r} is not in input/{subfolder}.", "Pick another file.")
    return full


class MagicBoostLoadMesh:
    DESCRIPTION = ("Loads a triangle mesh (GLB/GLTF/OBJ/PLY/STL) with its vertex colours or texture, from ComfyUI's "
                   "input/3d folder or from a path. Outputs ComfyUI's core MESH.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MESH",)
    RETURN_NAMES = ("mesh",)
    OUTPUT_TOOLTIPS = ("The mesh (ComfyUI core MESH, works with Save GLB / Preview 3D).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mesh_file": inp([NO_FILE] + _input_files("3d", MESH_EXTENSIONS), "A mesh in ComfyUI's input/3d folder.",
                             default=NO_FILE),
            "path": inp("STRING", "Or a file path (absolute, or relative to the input folder / the Magic-Boost pack "
                        "folder). Overrides mesh_file when not empty.", default=""),
        }}

    @classmethod
    def IS_CHANGED(cls, mesh_file=NO_FILE, path="", **kwargs):
        try:
            return file_fingerprint(_pick_file("Load Mesh", "mesh_file", mesh_file, path, "3d"))
        except ValueError:
            return ""

    def load(self, mesh_file=NO_FILE, path=""):
        full = _pick_file("Load Mesh", "mesh_file", mesh_file, path, "3d")
        which = "path" if path and path.strip() else "mesh_file"
        try:
            mesh = core("geometry.mesh_io", "load_mesh", "mesh loading")(full)
        except ValueError as e:
            raise NodeInputError("Load Mesh", which, f"cannot use {os.path.basename(full)}: {e}") from e
        return (meshes_to_output([mesh]),)


class MagicBoostSaveMesh:
    DESCRIPTION = ("Saves the mesh as a GLB (with vertex colours / texture) into ComfyUI's output folder, named "
                   "<prefix>_<counter>_.glb, and shows it in the 3D preview.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("glb_path",)
    OUTPUT_TOOLTIPS = ("Path of the (last) saved file relative to the output folder (for Preview 3D).",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mesh": inp("MESH", "The mesh to save (core MESH, ComfyUI-3D-Pack mesh or Magic-Boost output)."),
            "filename_prefix": inp("STRING", "File name prefix, may contain sub-folders (relative to output).",
                                   default="magicboost/mesh"),
        }}

    def save(self, mesh, filename_prefix="magicboost/mesh"):
        meshes = meshes_from_input(mesh, "Save Mesh", "mesh")
        try:
            folder, base, counter, subfolder = comfy_compat.save_path(filename_prefix)
        except Exception as e:
            raise NodeInputError("Save Mesh", "filename_prefix", str(e), "Use a relative prefix.") from e
        save_mesh = core("geometry.mesh_io", "save_mesh", "mesh saving")
        results, rel = [], ""
        for m in meshes:
            name = f"{base}_{counter:05}_.glb"
            save_mesh(m, os.path.join(folder, name))
            results.append({"filename": name, "subfolder": subfolder, "type": "output"})
            rel = os.path.join(subfolder, name) if subfolder else name
            counter += 1
        return {"ui": {"3d": results}, "result": (rel,)}


class MagicBoostLoadImages:
    DESCRIPTION = ("Loads view images (PNG/JPG, RGBA supported) as an IMAGE batch plus their MASK (1 = background, "
                   "from the alpha channel). Pick a file from the input folder, or give a path / several paths "
                   "separated by commas / a folder (its images in name order).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("images", "mask")
    OUTPUT_TOOLTIPS = ("The images, [B, H, W, 3] in [0, 1].", "Masks from the alpha channel, 1 = background.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image_file": inp([NO_FILE] + _input_files("", IMAGE_EXTENSIONS), "An image in ComfyUI's input folder.",
                              default=NO_FILE),
            "path": inp("STRING", "Or file path(s) separated by commas, or a folder; relative paths are looked up in "
                        "the input folder and the Magic-Boost pack folder. Overrides image_file when not empty.",
                        default=""),
        }}

    @classmethod
    def IS_CHANGED(cls, image_file=NO_FILE, path="", **kwargs):
        try:
            return "|".join(file_fingerprint(p) for p in cls._files(image_file, path))
        except ValueError:
            return ""

    @staticmethod
    def _files(image_file, path):
        if path and path.strip():
            files = []
            for part in [p for p in path.split(",") if p.strip()]:
                full = _pick_file("Load Images", "image_file", None, part, "")
                if os.path.isdir(full):
                    inside = sorted(f for f in os.listdir(full) if f.lower().endswith(IMAGE_EXTENSIONS))
                    if not inside:
                        raise NodeInputError("Load Images", "path", f"folder {part!r} has no images.")
                    files += [os.path.join(full, f) for f in inside]
                else:
                    files.append(full)
            return files
        return [_pick_file("Load Images", "image_file", image_file, "", "")]

    def load(self, image_file=NO_FILE, path=""):
        import numpy as np
        import torch
        from PIL import Image, ImageOps

        images, masks = [], []
        for f in self._files(image_file, path):
            try:
                img = ImageOps.exif_transpose(Image.open(f))
            except OSError as e:
                raise NodeInputError("Load Images", "path" if path else "image_file",
                                     f"cannot read {os.path.basename(f)}: {e}") from e
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
            if images and rgba.shape[:2] != images[0].shape[:2]:
                raise NodeInputError("Load Images", "path", f"{os.path.basename(f)} is {rgba.shape[1]}x"
                                     f"{rgba.shape[0]}, the first image is {images[0].shape[1]}x{images[0].shape[0]}.",
                                     "All views must have the same size.")
            images.append(rgba[..., :3])
            masks.append(1.0 - rgba[..., 3])
        return (torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks)))


class MagicBoostRenderViews:
    DESCRIPTION = ("Renders the mesh from the given cameras (albedo colours, shaded, or normals) - e.g. to compare "
                   "the coarse and refined mesh with the condition views.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("images", "mask")
    OUTPUT_TOOLTIPS = ("One render per camera on the background colour, [N, H, W, 3].",
                       "Object masks, 1 = background (ComfyUI convention).")
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mesh": inp("MESH", "The mesh to render."),
            "cameras": inp(CAMERAS, "Cameras from Magic-Boost Camera Poses."),
            "resolution": inp("INT", "Width and height of the renders in pixels.", default=256, min=16, max=2048,
                              step=8),
            "mode": inp(["albedo", "shaded", "normal"], "albedo = colours only; shaded = simple lighting; normal = "
                        "surface normals as colours.", default="albedo"),
            "background": inp("FLOAT", "Grey level of the background (1 = white, like the official pipeline).",
                              default=1.0, min=0.0, max=1.0, step=0.01),
        }}

    def render(self, mesh, cameras, resolution=256, mode="albedo", background=1.0):
        import torch

        meshes = meshes_from_input(mesh, "Render Views", "mesh")
        ViewPreset = core("geometry.presets", "ViewPreset")
        if not isinstance(cameras, ViewPreset):
            raise NodeInputError("Render Views", "cameras", f"expected MAGICBOOST_CAMERAS, got "
                                 f"{type(cameras).__name__}.", "Connect Magic-Boost Camera Poses.")
        render = core("render", "render", "the renderer")
        cams = cameras.cameras(int(resolution))
        rgbs, alphas = [], []
        for m in meshes:
            with torch.no_grad():
                out = render(m, cams, mode=mode, background=float(background))
            rgbs.append(out.rgb.detach().cpu())
            alphas.append(out.alpha.detach().cpu())
        rgb, alpha = torch.cat(rgbs), torch.cat(alphas)
        return (to_comfy_image(rgb), (1.0 - alpha[..., 0]).clamp(0, 1).float().contiguous())


class MagicBoostMeshToTrimesh:
    DESCRIPTION = "Converts a MESH (core / ComfyUI-3D-Pack / Magic-Boost) to a TRIMESH for trimesh-based packs."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("TRIMESH",)
    RETURN_NAMES = ("trimesh",)
    OUTPUT_TOOLTIPS = ("A trimesh.Trimesh (the first mesh of a batch).",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mesh": inp("MESH", "The mesh to convert.")}}

    def convert(self, mesh):
        meshes = meshes_from_input(mesh, "MESH to TRIMESH", "mesh")
        return (core("geometry.mesh_convert", "mesh_to_trimesh", "trimesh conversion")(meshes[0]),)


class MagicBoostTrimeshToMesh:
    DESCRIPTION = "Converts a TRIMESH (trimesh.Trimesh, e.g. from Hunyuan3D wrappers) to ComfyUI's core MESH."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MESH",)
    RETURN_NAMES = ("mesh",)
    OUTPUT_TOOLTIPS = ("The mesh as ComfyUI core MESH.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"trimesh": inp("TRIMESH", "A trimesh.Trimesh object.")}}

    def convert(self, trimesh):
        if not (hasattr(trimesh, "vertices") and hasattr(trimesh, "faces")):
            raise NodeInputError("TRIMESH to MESH", "trimesh", f"expected a trimesh.Trimesh, got "
                                 f"{type(trimesh).__name__}.", "Connect a TRIMESH output.")
        try:
            mesh = core("geometry.mesh_convert", "mesh_from_trimesh", "trimesh conversion")(trimesh)
        except ValueError as e:
            raise NodeInputError("TRIMESH to MESH", "trimesh", str(e)) from e
        return (meshes_to_output([mesh]),)


NODE_CLASS_MAPPINGS = {
    "MagicBoostLoadMesh": MagicBoostLoadMesh,
    "MagicBoostSaveMesh": MagicBoostSaveMesh,
    "MagicBoostLoadImages": MagicBoostLoadImages,
    "MagicBoostRenderViews": MagicBoostRenderViews,
    "MagicBoostMeshToTrimesh": MagicBoostMeshToTrimesh,
    "MagicBoostTrimeshToMesh": MagicBoostTrimeshToMesh,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MagicBoostLoadMesh": "Magic-Boost Load Mesh",
    "MagicBoostSaveMesh": "Magic-Boost Save Mesh (GLB)",
    "MagicBoostLoadImages": "Magic-Boost Load Images",
    "MagicBoostRenderViews": "Magic-Boost Render Views",
    "MagicBoostMeshToTrimesh": "Magic-Boost MESH to TRIMESH",
    "MagicBoostTrimeshToMesh": "Magic-Boost TRIMESH to MESH",
}
