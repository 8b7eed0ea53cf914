"""Loading ``magicboost_core`` for the node pack, once, when the pack is imported.

ComfyUI imports the pack as a package named after its folder path, and the pack root is not on
``sys.path``. :func:`ensure_core` therefore loads the bundled ``magicboost_core`` by file location
(without touching ``sys.path``, whose front must keep ComfyUI's own ``nodes`` module) unless it is
already imported or installed. ``nodes/__init__.py`` calls it before importing any node module, so the
node modules then import the engine with ordinary ``from magicboost_core... import ...`` statements.
"""
from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]


def ensure_core():
    """Import ``magicboost_core`` (the copy bundled with this pack, unless one is already imported)."""
    mod = sys.modules.get("magicboost_core")
    if mod is not None:
        return mod
    init = PACK_ROOT / "magicboost_core" / "__init__.py"
    if not init.is_file():
        return importlib.import_module("magicboost_core")  # pip-installed engine
    spec = importlib.util.spec_from_file_location(
        "magicboost_core", init, submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["magicboost_core"] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop("magicboost_core", None)
        raise
    return mod
