"""Magic-Boost node pack for ComfyUI.

ComfyUI imports this file as the pack's entry point (relative imports only; the pack is registered
under its folder path). It also imports cleanly in plain Python without ComfyUI.
"""
try:  # imported by ComfyUI as a package
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError:  # pragma: no cover - imported as a top-level module (e.g. pytest rootdir)
    from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # type: ignore

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
