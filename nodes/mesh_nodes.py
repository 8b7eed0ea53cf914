"""Load / Save Mesh, Load Images, Render Views and the MESH <-> TRIMESH converters."""
from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings

import numpy as np
import torch

from magicboost_core import validate
from magicboost_core.geometry.mesh_convert import mesh_from_trimesh, mesh_to_trimesh
from magicboost_core.geometry.mesh_io import load_mesh, save_mesh
from magicboost_core.geometry.transform import normalize_to_unit_sphere
from magicboost_core.images import read_image_file
from magicboost_core.render import render as render_views

from . import comfy_compat
from .common import CAMERAS, Node, NodeInputError, check_cameras, meshes_from_input, meshes_to_output, to_comfy_image
from .engine import PACK_ROOT
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


def _file_inputs(name: str, subfolder: str, extensions, file_tooltip: str, path_tooltip: str) -> dict:
    """Inputs of a loader node: the combo ``name`` of the files now in ``input/<subfolder>`` (read at each
    ``INPUT_TYPES`` call) and the text input ``path``, which overrides it when not empty."""
    return {name: inp([NO_FILE] + _input_files(subfolder, extensions), file_tooltip, default=NO_FILE),
            "path": inp("STRING", path_tooltip, default="")}


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


AXES_CHOICES = ["auto", "y-up", "z-up"]
FILE_3D_TYPES = "FILE_3D,FILE_3D_GLB,FILE_3D_GLTF,FILE_3D_OBJ,FILE_3D_PLY,FILE_3D_STL"


def _file3d_source(value):
    """A core File3D (newer ComfyUI: ``get_source()`` -> path or byte stream, ``format``; older: ``.data``)
    -> (path or None, bytes or None, format without dot)."""
    fmt = str(getattr(value, "format", "") or "").lstrip(".").lower()
    src = value.get_source() if hasattr(value, "get_source") else getattr(value, "data", None)
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src), None, fmt or os.path.splitext(os.fspath(src))[1].lstrip(".").lower()
    if hasattr(src, "read"):
        if hasattr(src, "seek"):
            src.seek(0)
        return None, src.read(), fmt
    raise TypeError(f"{type(value).__name__} holds neither a file path nor bytes")


class MagicBoostLoadMesh(Node):
    """Loads a triangle mesh (GLB/GLTF/OBJ/PLY/STL) with its vertex colours or texture, from ComfyUI's input/3d
    folder, from a path, or from core Load 3D: connect its 'mesh_path' output to 'path' (right-click > convert
    to input on older ComfyUI), or its FILE_3D 'model_file' output to 'file_3d' on ComfyUI >= 0.24. Outputs
    ComfyUI's core MESH."""

    OUTPUTS = (("MESH", "mesh", "The mesh (ComfyUI core MESH, works with Save GLB / Preview 3D)."),)
    FUNCTION = "load"
    OPTIONAL = {
        "axes": inp(AXES_CHOICES, "Up axis of the file. auto: GLB/glTF are y-up (by specification), OBJ/PLY/STL are "
                    "taken as stored (z-up). y-up: use for OBJ/PLY exported y-up (Blender/Maya defaults), so they "
                    "load like the GLB of the same model. z-up: every format as stored.", default="auto"),
        "file_3d": inp(FILE_3D_TYPES, "Optional: a core 3D file (FILE_3D, ComfyUI >= 0.24, e.g. Load 3D's "
                       "model_file). Overrides mesh_file and path."),
    }

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _file_inputs(
            "mesh_file", "3d", MESH_EXTENSIONS, "A mesh in ComfyUI's input/3d folder.",
            "Or a file path (absolute, or relative to the input folder / the Magic-Boost pack folder), e.g. core "
            "Load 3D's mesh_path output. Overrides mesh_file when not empty."), "optional": dict(cls.OPTIONAL)}

    @classmethod
    def IS_CHANGED(cls, mesh_file=NO_FILE, path="", axes="auto", file_3d=None, **kwargs):
        if file_3d is not None:
            return float("nan")  # an in-memory file: always reload
        try:
            return file_fingerprint(_pick_file("Load Mesh", "mesh_file", mesh_file, path, "3d")) + f"|{axes}"
        except ValueError:
            return ""

    def load(self, mesh_file=NO_FILE, path="", axes="auto", file_3d=None):
        if axes not in AXES_CHOICES:
            raise NodeInputError("Load Mesh", "axes", f"unknown value {axes!r}.", f"Choose one of {AXES_CHOICES}.")
        if file_3d is not None:
            return (meshes_to_output([self._load_file3d(file_3d, axes)]),)
        full = _pick_file("Load Mesh", "mesh_file", mesh_file, path, "3d")
        which = "path" if path and path.strip() else "mesh_file"
        try:
            mesh = load_mesh(full, axes=axes)
        except ValueError as e:
            raise NodeInputError("Load Mesh", which, f"cannot use {os.path.basename(full)}: {e}",
                                 "Give a triangle mesh file (GLB, glTF, OBJ, PLY, STL).") from e
        return (meshes_to_output([mesh]),)

    @staticmethod
    def _load_file3d(file_3d, axes):
        try:
            path, data, fmt = _file3d_source(file_3d)
        except TypeError as e:
            raise NodeInputError("Load Mesh", "file_3d", f"unsupported 3D file object: {e}.",
                                 "Connect a FILE_3D output (e.g. core Load 3D's model_file).") from e
        if "." + fmt not in MESH_EXTENSIONS:
            raise NodeInputError("Load Mesh", "file_3d", f"the 3D file is of type {fmt or 'unknown'!r}, not a mesh "
                                 f"format this node reads ({', '.join(MESH_EXTENSIONS)}).",
                                 "Convert it to GLB or OBJ first (gaussian splats and FBX are not meshes it reads).")
        try:
            if path is not None:
                return load_mesh(path, axes=axes)
            limit = validate.size_limit("mesh")
            if len(data) > limit:
                raise ValueError(f"the 3D file is {len(data)} bytes, more than the {limit} allowed for a mesh.")
            with tempfile.TemporaryDirectory(prefix="magicboost-file3d-") as tmp:
                tmp_path = os.path.join(tmp, "model." + fmt)
                with open(tmp_path, "wb") as f:
                    f.write(data)
                return load_mesh(tmp_path, axes=axes)
        except ValueError as e:
            raise NodeInputError("Load Mesh", "file_3d", f"cannot use the connected 3D file: {e}",
                                 "Connect a valid triangle mesh (GLB, glTF, OBJ, PLY, STL).") from e


class MagicBoostSaveMesh(Node):
    """Saves the mesh as a GLB (with vertex colours / texture) into ComfyUI's output folder, named
    <prefix>_<counter>_.glb (never overwriting an existing file). ComfyUI shows no 3D preview on this node:
    connect glb_path to core Preview 3D to view it."""

    OUTPUTS = (("STRING", "glb_path", "Path of the (last) saved file relative to the output folder (for Preview "
                "3D)."),)
    FUNCTION = "save"
    OUTPUT_NODE = True
    REQUIRED = {
        "mesh": inp("MESH", "The mesh to save (core MESH, ComfyUI-3D-Pack mesh or Magic-Boost output)."),
        "filename_prefix": inp("STRING", "File name prefix, may contain sub-folders (relative to output).",
                               default="magicboost/mesh"),
    }

    def save(self, mesh, filename_prefix="magicboost/mesh"):
        meshes = meshes_from_input(mesh, "Save Mesh", "mesh")
        results, rel = [], ""
        for m, (path, subfolder) in zip(meshes, claim_output_files("Save Mesh", filename_prefix, ".glb",
                                                                   len(meshes))):
            try:
                save_mesh(m, path, overwrite=True)  # replaces only the placeholder this call claimed
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            results.append({"filename": path.name, "subfolder": subfolder, "type": "output"})
            rel = os.path.join(subfolder, path.name) if subfolder else path.name
        return {"ui": {"3d": results}, "result": (rel,)}


def claim_output_files(node: str, filename_prefix: str, ext: str, count: int, output_dir: str | None = None):
    """Reserve ``count`` new files ``<prefix>_<counter:05>_<ext>`` in the output folder (ComfyUI naming).

    The prefix is checked (no NUL/control characters, relative, no '..'); its sub-folder is resolved
    with symlinks and must stay inside the output folder; names are claimed exclusively, so parallel runs
    never overwrite each other. Returns [(path, subfolder)]; each path exists as an empty placeholder
    that the caller replaces atomically (or removes on failure).
    """
    root = output_dir or comfy_compat.output_directory()
    try:
        prefix = validate.check_filename_prefix(filename_prefix)
        subfolder_in = os.path.dirname(prefix)
        if "%" not in subfolder_in:  # ComfyUI %date% tokens are expanded by save_path
            validate.output_subfolder(root, subfolder_in)
        folder, base, counter, subfolder = comfy_compat.save_path(prefix, root)
        real = validate.output_subfolder(root, os.path.relpath(folder, root))
    except ValueError as e:
        raise NodeInputError(node, "filename_prefix", str(e)) from e
    claimed = []
    for _ in range(count):
        path, counter = validate.claim_unique_path(real, lambda c: f"{base}_{c:05}_{ext}", counter)
        claimed.append((path, subfolder))
        counter += 1
    return claimed


class MagicBoostLoadImages(Node):
    """Loads view images (PNG/JPG, RGBA supported) as an IMAGE batch plus their MASK (1 = background, from the
    alpha channel). Pick a file from the input folder, or give a path / several paths separated by commas / a
    folder (its images in name order)."""

    OUTPUTS = (("IMAGE", "images", "The images, [B, H, W, 3] in [0, 1]."),
               ("MASK", "mask", "Masks from the alpha channel, 1 = background."))
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _file_inputs(
            "image_file", "", IMAGE_EXTENSIONS, "An image in ComfyUI's input folder.",
            "Or file path(s) separated by commas, or a folder; relative paths are looked up in the input folder and "
            "the Magic-Boost pack folder. Overrides image_file when not empty.")}

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
        images, masks = [], []
        for f in self._files(image_file, path):
            try:
                rgba, _ = read_image_file(f, "image")
            except ValueError as e:
                raise NodeInputError("Load Images", "path" if path and path.strip() else "image_file",
                                     f"cannot read {os.path.basename(f)}: {e}") from e
            if images and rgba.shape[:2] != images[0].shape[:2]:
                raise NodeInputError("Load Images", "path", f"{os.path.basename(f)} is {rgba.shape[1]}x"
                                     f"{rgba.shape[0]}, the first image is {images[0].shape[1]}x{images[0].shape[0]}.",
                                     "All views must have the same size.")
            images.append(rgba[..., :3])
            masks.append(1.0 - rgba[..., 3])
        return (torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks)))


FRAMING_CHOICES = ["as is", "fit"]


class MagicBoostRenderViews(Node):
    """Renders the mesh from the given cameras (albedo colours, shaded, or normals) - e.g. to compare the coarse
    and refined mesh with the condition views."""

    OUTPUTS = (("IMAGE", "images", "One render per camera on the background colour, [N, H, W, 3]."),
               ("MASK", "mask", "Object masks, 1 = background (ComfyUI convention)."))
    FUNCTION = "render"
    REQUIRED = {
        "mesh": inp("MESH", "The mesh to render."),
        "cameras": inp(CAMERAS, "Cameras from Magic-Boost Camera Poses."),
        "resolution": inp("INT", "Width and height of the renders in pixels.", default=256, min=16, max=2048, step=8),
        "mode": inp(["albedo", "shaded", "normal"], "albedo = colours only; shaded = simple lighting; normal = "
                    "surface normals as colours.", default="albedo"),
        "background": inp("FLOAT", "Grey level of the background (1 = white, like the official pipeline).",
                          default=1.0, min=0.0, max=1.0, step=0.01),
    }
    OPTIONAL = {
        "framing": inp(FRAMING_CHOICES, "as is: render the mesh where it is (the cameras look at the origin); fit: "
                       "centre it and scale it into a sphere of radius 0.5 first (for meshes away from the origin or "
                       "far from unit size).", default="as is"),
    }

    def render(self, mesh, cameras, resolution=256, mode="albedo", background=1.0, framing="as is"):
        if framing not in FRAMING_CHOICES:
            raise NodeInputError("Render Views", "framing", f"unknown value {framing!r}.",
                                 f"Choose one of {FRAMING_CHOICES}.")
        meshes = meshes_from_input(mesh, "Render Views", "mesh")
        if framing == "fit":
            try:
                meshes = [normalize_to_unit_sphere(m, radius=0.5)[0] for m in meshes]
            except ValueError as e:
                raise NodeInputError("Render Views", "mesh", str(e), "Give a mesh with a non-zero size.") from e
        cams = check_cameras(cameras, "Render Views").cameras(int(resolution))
        rgbs, alphas = [], []
        for m in meshes:
            with torch.no_grad():
                out = render_views(m, cams, mode=mode, background=float(background))
            rgbs.append(out.rgb.detach().cpu())
            alphas.append(out.alpha.detach().cpu())
        rgb, alpha = torch.cat(rgbs), torch.cat(alphas)
        _check_framing(meshes, cameras, alpha, framing)
        return (to_comfy_image(rgb), (1.0 - alpha[..., 0]).clamp(0, 1).float().contiguous())



def _check_framing(meshes, cameras, alpha, framing) -> None:
    """Blank renders raise, badly framed ones warn: both say where the mesh is and how to fix it.

    ``alpha``: (N_meshes * V, H, W, 1), 1 = object. The cameras look at the origin from ``cameras.distance``.
    """
    v = meshes[0].vertices.detach().double()
    lo, hi = v.min(0).values, v.max(0).values
    center = ((lo + hi) / 2).tolist()
    radius = float((v - (lo + hi) / 2).norm(dim=-1).max())
    seen = cameras.distance * math.tan(math.radians(cameras.fovy_deg) / 2)
    where = (f"the mesh's centre is at ({center[0]:.3g}, {center[1]:.3g}, {center[2]:.3g}) with radius {radius:.3g}, "
             f"while the cameras look at the origin from distance {cameras.distance:g} and see about +-{seen:.2g}")
    fix = ("Set 'framing' to 'fit', or move/scale the mesh to fit a sphere of radius ~0.5 at the origin.")
    coverage = alpha.float().mean(dim=(1, 2, 3))
    if float(coverage.max()) == 0.0:
        raise NodeInputError("Render Views", "mesh", f"every render is empty: {where}.", fix)
    full_border = [float(a[0].mean()) + float(a[-1].mean()) + float(a[:, 0].mean()) + float(a[:, -1].mean())
                   for a in alpha[..., 0]]
    if framing == "as is" and (float(coverage.min()) < 1e-3 or max(full_border) > 3.5):
        msg = (f"Magic-Boost Render Views: some renders are nearly empty or the object overflows the frame: {where}. "
               f"{fix}")
        warnings.warn(msg, stacklevel=3)
        logging.getLogger("magicboost").warning(msg)


class MagicBoostMeshToTrimesh(Node):
    """Converts a MESH (core / ComfyUI-3D-Pack / Magic-Boost) to a TRIMESH for trimesh-based packs."""

    OUTPUTS = (("TRIMESH", "trimesh", "A trimesh.Trimesh (the first mesh of a batch)."),)
    FUNCTION = "convert"
    REQUIRED = {"mesh": inp("MESH", "The mesh to convert.")}

    def convert(self, mesh):
        meshes = meshes_from_input(mesh, "MESH to TRIMESH", "mesh")
        return (mesh_to_trimesh(meshes[0]),)


class MagicBoostTrimeshToMesh(Node):
    """Converts a TRIMESH (trimesh.Trimesh, e.g. from Hunyuan3D wrappers) to ComfyUI's core MESH."""

    OUTPUTS = (("MESH", "mesh", "The mesh as ComfyUI core MESH."),)
    FUNCTION = "convert"
    REQUIRED = {"trimesh": inp("TRIMESH", "A trimesh.Trimesh object.")}

    def convert(self, trimesh):
        if not (hasattr(trimesh, "vertices") and hasattr(trimesh, "faces")):
            raise NodeInputError("TRIMESH to MESH", "trimesh", f"expected a trimesh.Trimesh, got "
                                 f"{type(trimesh).__name__}.", "Connect a TRIMESH output.")
        try:
            mesh = mesh_from_trimesh(trimesh)
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
