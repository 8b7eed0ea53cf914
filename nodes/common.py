"""Socket type names, the objects that flow through the pack's private sockets, and input checks.

ComfyUI conventions used here: IMAGE is a float tensor (B, H, W, C) in [0, 1] on the CPU (C = 3, or 4
for RGBA); MASK is (B, H, W) or (H, W) float in [0, 1] where **1 = transparent / masked out** (the
LoadImage convention: mask = 1 - alpha); MESH is ComfyUI's core mesh (batched ``vertices`` (B, N, 3),
``faces`` (B, M, 3)); TRIMESH is a ``trimesh.Trimesh``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from magicboost_core.geometry.mesh import Mesh
from magicboost_core.geometry.mesh_convert import mesh_from_comfy, mesh_to_comfy
from magicboost_core.geometry.presets import ViewPreset

from . import comfy_compat

CATEGORY = "Magic-Boost"

MODEL = "MAGICBOOST_MODEL"
VIEWS = "MAGICBOOST_VIEWS"
CAMERAS = "MAGICBOOST_CAMERAS"
AIU_CONFIG = "MAGICBOOST_AIU_CONFIG"

PRESET_CHOICES = ["instant3d", "instantmesh"]


class NodeInputError(ValueError):
    """Bad input to a node; the message names the node, the input and the fix.

    Shown as ``NodeInputError`` (not ``custom_nodes.<pack folder>.nodes.common.NodeInputError``) in
    ComfyUI's error dialog, which prints the module path of any exception type outside ``builtins``.
    """

    def __init__(self, node: str, input_name: str, problem: str, fix: str = ""):
        self.node, self.input_name = node, input_name
        msg = f"{node}: input '{input_name}': {problem}"
        if fix:
            msg += f" {fix}"
        super().__init__(msg)


NodeInputError.__module__ = "builtins"  # see the docstring; same as magicboost_core.validate.readable_error


class Node:
    """Base of the pack's node classes (classic V1 API): the class attributes ComfyUI reads, from tables.

    A subclass's docstring is its ``DESCRIPTION`` (joined into one line; a ``DESCRIPTION`` attribute wins).
    It sets ``FUNCTION``, ``OUTPUTS`` (``(type, name, tooltip)`` per output; they become ``RETURN_TYPES``,
    ``RETURN_NAMES`` and ``OUTPUT_TOOLTIPS``) and its inputs as ``REQUIRED`` / ``OPTIONAL`` dicts of
    :func:`.spec.inp` entries; a node whose inputs change at run time (file lists) overrides ``INPUT_TYPES``.
    """

    CATEGORY = CATEGORY
    OUTPUTS: tuple = ()
    REQUIRED: dict = {}
    OPTIONAL: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "DESCRIPTION" not in vars(cls):
            cls.DESCRIPTION = " ".join((cls.__doc__ or "").split())
        cls.RETURN_TYPES = tuple(out[0] for out in cls.OUTPUTS)
        cls.RETURN_NAMES = tuple(out[1] for out in cls.OUTPUTS)
        cls.OUTPUT_TOOLTIPS = tuple(out[2] for out in cls.OUTPUTS)

    @classmethod
    def INPUT_TYPES(cls):
        spec = {"required": dict(cls.REQUIRED)}
        if cls.OPTIONAL:
            spec["optional"] = dict(cls.OPTIONAL)
        return spec


@dataclass
class EncodedViews:
    """What flows through a MAGICBOOST_VIEWS socket.

    ``cond``: the engine's ViewConditioning; ``preset``: the anchor cameras (a ViewPreset: elevations,
    azimuths in degrees, z-up, distance, fovy); ``images``: (A, H, W, 3) float [0, 1] condition views
    composited on white (kept for previews); ``masks``: (A, H, W, 1) float [0, 1], 1 = object.
    """

    cond: Any
    preset: Any
    images: Any = None
    masks: Any = None
    model_id: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_views(self) -> int:
        return len(self.preset.azimuths)


# ------------------------------------------------------------------------------------------ images
def image_batch(value, node: str, name: str):
    """Check a ComfyUI IMAGE; returns a float32 CPU tensor (B, H, W, C), C in {3, 4}, values in [0, 1]."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise NodeInputError(node, name, f"expected an IMAGE tensor, got {type(value).__name__}.",
                             "Connect an IMAGE output (e.g. Load Image).")
    t = value
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] not in (1, 3, 4):
        raise NodeInputError(node, name, f"expected shape [B, H, W, 3|4], got {list(value.shape)}.",
                             "Connect an IMAGE output, not a LATENT or MASK.")
    if min(t.shape[:3]) < 1:
        raise NodeInputError(node, name, f"the image batch is empty (shape {list(value.shape)}).")
    t = t.detach().to("cpu", torch.float32)
    if t.shape[-1] == 1:
        t = t.expand(*t.shape[:3], 3)
    if not torch.isfinite(t).all():
        raise NodeInputError(node, name, "the image contains NaN or infinite values.")
    return t.clamp(0.0, 1.0)


def mask_batch(value, node: str, name: str, count: int, height: int, width: int):
    """Check a ComfyUI MASK (1 = transparent) for ``count`` images of height x width.

    Returns an object-coverage tensor (count, H, W, 1) float32 in [0, 1] with **1 = object**
    (i.e. ``1 - mask``). One mask is broadcast to all images.
    """
    import torch

    if not isinstance(value, torch.Tensor):
        raise NodeInputError(node, name, f"expected a MASK tensor, got {type(value).__name__}.")
    m = value.detach().to("cpu", torch.float32)
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if m.ndim != 3:
        raise NodeInputError(node, name, f"expected shape [B, H, W], got {list(value.shape)}.")
    if tuple(m.shape[1:]) != (height, width):
        raise NodeInputError(node, name, f"mask size {tuple(m.shape[1:])} does not match the image size "
                             f"{(height, width)}.", "Use the mask that came with the image (Load Image).")
    if m.shape[0] == 1 and count > 1:
        m = m.expand(count, height, width)
    if m.shape[0] != count:
        raise NodeInputError(node, name, f"{m.shape[0]} masks for {count} images.",
                             "Give one mask per image, or a single mask for all.")
    return (1.0 - m.clamp(0, 1)).unsqueeze(-1)


def to_comfy_image(images):
    """(N, H, W, C) tensor in [0, 1] -> ComfyUI IMAGE (float32, CPU, contiguous, 3 channels)."""
    import torch

    t = torch.as_tensor(images).detach().to("cpu", torch.float32)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.shape[-1] == 1:
        t = t.expand(*t.shape[:3], 3)
    return t[..., :3].clamp(0, 1).contiguous()


# ------------------------------------------------------------------------------------------ meshes
def meshes_from_input(value, node: str, name: str) -> list:
    """Any supported mesh object -> list of ``magicboost_core`` Mesh (one per batch item).

    Accepts ComfyUI core MESH (batched), ComfyUI-3D-Pack meshes (``v``/``f``), ``trimesh.Trimesh``, our Mesh,
    or a list of those.
    """
    if value is None:
        raise NodeInputError(node, name, "no mesh connected.", "Connect a MESH (e.g. Magic-Boost Load Mesh).")
    cached = getattr(value, "magicboost_meshes", None)
    if cached:
        return list(cached)
    if isinstance(value, Mesh):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(m, Mesh) for m in value):
        return list(value)
    try:
        meshes = mesh_from_comfy(value)
    except ValueError as e:
        raise NodeInputError(node, name, str(e)) from e
    except TypeError as e:
        raise NodeInputError(node, name, f"unsupported mesh object {type(value).__name__}: {e}",
                             "Connect a MESH (core, ComfyUI-3D-Pack) or TRIMESH output.") from e
    if not meshes:
        raise NodeInputError(node, name, "the mesh batch is empty.", "Load a non-empty mesh.")
    return list(meshes)


def meshes_to_output(meshes):
    """list of our Mesh -> ComfyUI core MESH (the real ``Types.MESH`` class inside ComfyUI).

    The exact meshes ride along as ``.magicboost_meshes`` so downstream Magic-Boost nodes lose nothing
    (UV seams, texture) through the batched core format.
    """
    out = mesh_to_comfy(list(meshes), mesh_cls=comfy_compat.core_mesh_class())
    try:
        out.magicboost_meshes = list(meshes)
    except AttributeError:  # pragma: no cover - slotted class
        pass
    return out


def single_mesh(meshes: list, node: str, name: str):
    """The one mesh of ``meshes``; a batch of several is an error naming the input."""
    if len(meshes) != 1:
        raise NodeInputError(node, name, f"got a batch of {len(meshes)} meshes; this node refines one mesh.",
                             "Split the batch or pass a single mesh.")
    return meshes[0]


# ------------------------------------------------------------------------------------------ sockets
def check_model(mv_model, node: str):
    """The MAGICBOOST_MODEL input, which must be connected."""
    if mv_model is None:
        raise NodeInputError(node, "mv_model", "no model connected.", "Connect Magic-Boost Load MV Model.")
    return mv_model


def check_views(views, mv_model, node: str) -> EncodedViews:
    """The MAGICBOOST_VIEWS input, encoded with ``mv_model`` (the same Load MV Model output)."""
    if not isinstance(views, EncodedViews):
        raise NodeInputError(node, "views", f"expected MAGICBOOST_VIEWS, got {type(views).__name__}.",
                             "Connect Magic-Boost Encode Views.")
    if views.model_id is not None and views.model_id != id(mv_model):
        raise NodeInputError(node, "views", "the views were encoded with a different model.",
                             "Connect the same Load MV Model to Encode Views and this node.")
    return views


def check_cameras(value, node: str, name: str = "cameras") -> ViewPreset:
    """A MAGICBOOST_CAMERAS input (the engine's ViewPreset)."""
    if not isinstance(value, ViewPreset):
        raise NodeInputError(node, name, f"expected MAGICBOOST_CAMERAS, got {type(value).__name__}.",
                             "Connect the output of Magic-Boost Camera Poses.")
    return value


# ------------------------------------------------------------------------------------------ numbers
def check_number_inputs(node: str, cls, kwargs: dict) -> None:
    """Every INT/FLOAT input in ``kwargs`` is finite and inside its ``INPUT_TYPES`` min/max.

    ComfyUI's own range check lets NaN through (``nan < min`` is False), and a NaN learning rate then
    fails deep inside the renderer; this names the input instead.
    """
    import math

    types = cls.INPUT_TYPES()
    specs = {**types.get("required", {}), **types.get("optional", {})}
    for name, value in kwargs.items():
        spec = specs.get(name)
        if not spec or spec[0] not in ("INT", "FLOAT") or isinstance(value, bool):
            continue
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        lo, hi = opts.get("min"), opts.get("max")
        rng = f" between {lo} and {hi}" if lo is not None and hi is not None else ""
        try:
            num = float(value)
        except (TypeError, ValueError):
            raise NodeInputError(node, name, f"expected a number, got {value!r}.", f"Give a number{rng}.") from None
        if not math.isfinite(num):
            raise NodeInputError(node, name, f"{value!r} is not a finite number.", f"Give a number{rng}.")
        if (lo is not None and num < lo) or (hi is not None and num > hi):
            raise NodeInputError(node, name, f"{value!r} is outside the allowed range.", f"Give a number{rng}.")


def guard_number_inputs(mappings: dict, display_names: dict) -> None:
    """Wrap each node class's FUNCTION so :func:`check_number_inputs` runs before it (in ComfyUI and the
    runner alike), and so that an engine error class (``magicboost_core.*``) raised through a node shows
    its plain name in ComfyUI's dialog (see ``magicboost_core.validate.readable_error``). Idempotent."""
    import functools

    for class_id, cls in mappings.items():
        func = getattr(cls, cls.FUNCTION)
        if getattr(func, "_magicboost_checked", False):
            continue
        node = display_names.get(class_id, class_id).replace("Magic-Boost ", "")

        def make(func=func, cls=cls, node=node):
            @functools.wraps(func)
            def checked(self, *args, **kwargs):
                check_number_inputs(node, cls, kwargs)
                try:
                    return func(self, *args, **kwargs)
                except ValueError as e:  # engine errors read "RefineInputError: ...", not a module path
                    if type(e).__module__.split(".")[0] == "magicboost_core":
                        type(e).__module__ = "builtins"
                    raise

            checked._magicboost_checked = True
            return checked

        setattr(cls, cls.FUNCTION, make())
