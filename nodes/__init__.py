"""ComfyUI nodes of the Magic-Boost pack (thin wrappers over ``magicboost_core``).

Classic V1 node API: plain classes with a classmethod ``INPUT_TYPES``, collected in
``NODE_CLASS_MAPPINGS``. Nothing here imports ComfyUI at module level (see ``comfy_compat``), so the
classes import and run in plain Python too (tests, the headless runner ``python -m nodes.runner``).
The engine is loaded first (:func:`.engine.ensure_core`), so the node modules import it normally.
"""
from .engine import ensure_core

ensure_core()

from . import comfy_compat  # noqa: E402 - after the engine is loaded
from .common import guard_number_inputs
from .mesh_nodes import NODE_CLASS_MAPPINGS as _MESH, NODE_DISPLAY_NAME_MAPPINGS as _MESH_NAMES
from .model_nodes import NODE_CLASS_MAPPINGS as _MODEL, NODE_DISPLAY_NAME_MAPPINGS as _MODEL_NAMES
from .refine_nodes import NODE_CLASS_MAPPINGS as _REFINE, NODE_DISPLAY_NAME_MAPPINGS as _REFINE_NAMES
from .view_nodes import NODE_CLASS_MAPPINGS as _VIEW, NODE_DISPLAY_NAME_MAPPINGS as _VIEW_NAMES

NODE_CLASS_MAPPINGS = {**_MODEL, **_VIEW, **_REFINE, **_MESH}
NODE_DISPLAY_NAME_MAPPINGS = {**_MODEL_NAMES, **_VIEW_NAMES, **_REFINE_NAMES, **_MESH_NAMES}

guard_number_inputs(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)  # NaN / out-of-range numbers -> clear errors
comfy_compat.register_model_folder()  # no-op outside ComfyUI

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
