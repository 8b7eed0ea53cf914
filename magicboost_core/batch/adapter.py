"""The batch's only contact with the refinement code: model loading, the config, the refine call.

Everything ``magicboost batch`` does per asset that ``magicboost refine`` also does goes through
this module, so that a change of the refine command (e.g. the config coming from the model's
profile) is followed here in one place:

* :func:`load_model` — the multi-view model a ``--model`` value names (``None`` = the shipped demo model);
* :func:`resolve_config` — the RefineConfig of one asset: the model's profile + overrides, validated by
  :class:`~magicboost_core.refine.config.RefineConfig`;
* :func:`refine_views` — encode the condition views and refine the mesh (the same calls as
  ``magicboost refine``).
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from ..refine.config import AIUConfig, RefineConfig, RefineConfigError

__all__ = ["load_model", "resolve_config", "refine_views", "merge_overrides"]


def load_model(source: str | None, device: str = "cpu"):
    """The ``MultiViewModel`` in eval mode, no gradients: ``source`` = a converted model folder, or
    ``None`` / ``"demo"`` for the shipped demo model (as ``magicboost refine --model``)."""
    from ..refine.demo import load_demo

    if source in (None, "", "demo"):
        return load_demo(device)
    from ..model import MultiViewModel

    model = MultiViewModel.from_pretrained(source).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _typed(name: str, value, default):
    """``value`` checked against the type of the field's default (ints stay ints, lists become tuples)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and len(value) == len(default)
        value = tuple(value) if ok else value
    else:
        ok = True
    if not ok:
        raise RefineConfigError(f"config {name!r} must be {type(default).__name__} like its default {default!r}; "
                                f"got {value!r}.")
    return value


def merge_overrides(base: dict, overrides: dict) -> dict:
    """``base`` (``RefineConfig.to_dict()``) with ``overrides`` applied; names and types checked.

    Raises :class:`RefineConfigError` naming an unknown setting (with the known ones) or a wrong type.
    """
    out = {**base, "aiu": dict(base["aiu"])}
    known = {f.name: f for f in fields(RefineConfig)}
    known_aiu = {f.name for f in fields(AIUConfig)}
    for key, value in overrides.items():
        if key not in known:
            raise RefineConfigError(f"unknown config setting {key!r}; known: {sorted(known)}.")
        if key == "aiu":
            if not isinstance(value, dict):
                raise RefineConfigError("config 'aiu' must be a group of settings, e.g. {\"enabled\": false}.")
            for k, v in value.items():
                if k not in known_aiu:
                    raise RefineConfigError(f"unknown config setting 'aiu.{k}'; known: {sorted(known_aiu)}.")
                out["aiu"][k] = _typed(f"aiu.{k}", v, getattr(AIUConfig(), k))
        else:
            out[key] = _typed(key, value, getattr(RefineConfig(), key))
    return out


def _model_info(source: str | None):
    """The bundle's ``info`` (what chooses its refinement profile) from its config.json, without loading
    weights; None when there is no config.json to read (loading the model then reports the problem)."""
    from types import SimpleNamespace

    from ..model.bundle import CONFIG_FILE, ModelInfo, demo_model_dir
    from ..validate import load_json_file

    if source in (None, "", "demo"):
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

    base = profile_config(_model_info(model_source), preset=preset).to_dict()
    try:
        return RefineConfig.from_dict(merge_overrides(base, overrides))
    except (TypeError, ValueError) as e:
        if isinstance(e, RefineConfigError):
            raise
        raise RefineConfigError(f"config: {e}") from None


def refine_views(model, mesh, views: torch.Tensor, config: RefineConfig, progress=None):
    """Refine ``mesh`` from its condition ``views`` exactly as ``magicboost refine`` does.

    Args:
        model: from :func:`load_model`.
        mesh: the coarse :class:`~magicboost_core.geometry.mesh.Mesh` (z-up, caller's frame).
        views: (A, H, W, 4) RGBA float in [0, 1] in the preset's anchor order (alpha 1 = object).
        config: from :func:`resolve_config`; ``config.seed`` also seeds the view encoding.
        progress: ``progress(step, total, losses)`` after each step.
    Returns: the :class:`~magicboost_core.refine.loop.RefineResult` (mesh in the caller's frame).
    """
    from ..geometry.presets import get_preset
    from ..model.conditioning import encode_views
    from ..refine.loop import refine_mesh

    preset = get_preset(config.preset)
    generator = torch.Generator().manual_seed(int(config.seed))
    cond = encode_views(model, views, torch.tensor(preset.elevations), torch.tensor(preset.azimuths),
                        masks=views[..., 3:4], generator=generator)
    return refine_mesh(model, cond, mesh, config, reference_views=(views[..., :3], views[..., 3:4]),
                       progress=progress)
