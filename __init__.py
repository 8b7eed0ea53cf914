"""Magic-Boost node pack for ComfyUI.

ComfyUI imports this file as the pack's entry point, as a package named after the folder path
(so only relative imports work here). Loading it by path in plain Python works as well:
``importlib.util.spec_from_file_location(name, "<pack>/__init__.py", submodule_search_locations=["<pack>"])``.
"""
import sys

if __package__ and __package__ in sys.modules:  # ComfyUI: loaded as a package, relative imports work
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a plain module (no parent package registered): pytest does this while collecting tests in a checkout whose folder
    # name is not a Python name (e.g. ``ComfyUI-MagicBoost``). There is no package to import from;
    # the nodes are registered only when ComfyUI loads the folder as a package.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
