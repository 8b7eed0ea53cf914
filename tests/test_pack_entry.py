"""The pack's entry point (the checkout's ``__init__.py``) imported as pytest does; the package import
as ComfyUI does it is tested in test_nodes.py."""
import importlib.util
import pathlib

ENTRY = pathlib.Path(__file__).resolve().parents[1] / "__init__.py"


def _load_plain(name: str):
    spec = importlib.util.spec_from_file_location(name, ENTRY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_module_import_does_not_fail():
    """pytest imports the root ``__init__.py`` as a plain module when the checkout's folder name is not
    a Python name (``ComfyUI-MagicBoost``); that must not break test collection."""
    module = _load_plain("ComfyUI-MagicBoost")
    assert module.NODE_CLASS_MAPPINGS == {} and module.NODE_DISPLAY_NAME_MAPPINGS == {}

