"""Magic-Boost node pack for ComfyUI.

ComfyUI imports this file as the pack's entry point, as a package named after the folder path
(so only relative imports work here). Loading it by path in plain Python works as well:
``importlib.util.spec_from_file_location(name, "<pack>/__init__.py", submodule_search_locations=["<pack>"])``.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
