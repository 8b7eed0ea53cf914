"""The batch's only contact with the refinement code: model loading, the config, the refine call.

Everything ``magicboost batch`` does per asset that ``magicboost refine`` also does goes through
this module, so that a change of the refine command (e.g. the config coming from the model's
profile) is followed here in one place:

* :func:`load_model` — the multi-view model a ``--model`` value names (``None`` = the shipped demo model),
  and :func:`refine_views` — encode the condition views and refine the mesh: both are
  :mod:`magicboost_core.refine.pipeline`'s, the calls of ``magicboost refine`` (the batch seeds the view
  encoding with ``config.seed``);
* :func:`resolve_config` — the RefineConfig of one asset: the model's profile + overrides, merged (names and
  JSON types checked) by :func:`~magicboost_core.refine.config.merge_settings` and validated by
  :class:`~magicboost_core.refine.config.RefineConfig`.
"""
from __future__ import annotations

from pathlib import Path

from ..refine.config import RefineConfig, RefineConfigError, merge_settings
from ..refine.pipeline import DEMO_SOURCES, load_model, refine_views

__all__ = ["load_model", "resolve_config", "refine_views"]


def _model_info(source: str | None):
    """The bundle's ``info`` (what chooses its refinement profile) from its config.json, without loading
    weights; None when there is no config.json to read (loading the model then reports the problem)."""
    from types import SimpleNamespace

    from ..model.bundle import CONFIG_FILE, ModelInfo, demo_model_dir
    from ..validate import load_json_file

    if source in DEMO_SOURCES:
        folder = demo_model_dir()
    else:
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
    if not (folder / CONFIG_FILE).is_file():
        return None
    config = load_json_file(folder / CONFIG_FILE, "model config", "config")
    return SimpleNamespace(info=ModelInfo.from_dict(config.get("info", {})))


def resolve_config(model_source: str | None, preset: str, overrides: dict) -> RefineConfig:
    """The RefineConfig of one asset, as ``magicboost refine`` resolves it: the model's refinement profile
    (:func:`~magicboost_core.refine.profiles.resolve_config`, read from its config.json without loading the
    weights) for ``preset``, then ``overrides`` (the batch's ``--set`` values, then the manifest row's).
    Raises :class:`RefineConfigError` for a bad setting.
    """
    from ..refine.profiles import resolve_config as profile_config

    base = profile_config(_model_info(model_source), preset=preset)
    try:
        return merge_settings(base, overrides, strict=True)
    except (TypeError, ValueError) as e:
        if isinstance(e, RefineConfigError):
            raise
        raise RefineConfigError(f"config: {e}") from None
