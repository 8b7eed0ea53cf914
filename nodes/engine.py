"""Access to ``magicboost_core`` from the node pack.

ComfyUI imports the pack as a package named after its folder path, and the pack root is not on
``sys.path``. We therefore load the bundled ``magicboost_core`` by file location (without touching
``sys.path``, whose front must keep ComfyUI's own ``nodes`` module) unless it is already imported or
installed. Engine functions are resolved lazily by :func:`core`, so the node classes import even while
parts of the engine are missing, and a node that needs a missing part raises a clear error when run.
"""
from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]


class EngineUnavailable(RuntimeError):
    """A part of ``magicboost_core`` the node needs is not installed / not importable."""


def ensure_core():
    """Import ``magicboost_core`` (the copy bundled with this pack, unless one is already imported)."""
    mod = sys.modules.get("magicboost_core")
    if mod is not None:
        return mod
    init = PACK_ROOT / "magicboost_core" / "__init__.py"
    if init.is_file():
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
    return importlib.import_module("magicboost_core")  # pip-installed engine


def core(module: str, name: str | None = None, feature: str | None = None):
    """``magicboost_core.<module>`` (or one attribute of it); clear error when it is not available."""
    ensure_core()
    full = f"magicboost_core.{module}"
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name and (e.name == full or full.startswith(e.name + ".") or e.name.startswith("magicboost_core")):
            raise EngineUnavailable(
                f"{feature or full} is not available: module {full} is missing from this installation of "
                "the Magic-Boost pack. Update the pack (git pull) and restart ComfyUI."
            ) from e
        raise
    if name is None:
        return mod
    try:
        return getattr(mod, name)
    except AttributeError as e:
        raise EngineUnavailable(
            f"{feature or name} is not available: {full} has no {name!r}. Update the Magic-Boost pack."
        ) from e
