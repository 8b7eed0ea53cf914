"""Refinement from a model source and RGBA views: what ``magicboost refine``, ``magicboost batch`` and the
demo share, so that they load models and call the loop the same way.

* :func:`load_model` — the multi-view model a ``--model`` value names (``None`` / ``"demo"`` = the shipped
  demo model);
* :func:`read_views` — the condition views from image files (one per anchor, or one grid image);
* :func:`refine_views` — encode the condition views and refine the mesh against them (the condition
  views at their full resolution are the reconstruction targets).
"""
from __future__ import annotations

import torch

__all__ = ["load_model", "read_views", "is_grid_input", "refine_views", "DEMO_SOURCES"]

#: ``--model`` values that name the shipped demo model (left out, empty, or "demo").
DEMO_SOURCES = (None, "", "demo")


def load_model(source: str | None = None, device=None):
    """The ``MultiViewModel`` in eval mode with gradients off: ``source`` = a converted model folder (or its
    ``model.safetensors``), or one of :data:`DEMO_SOURCES` for the shipped demo model (raises
    :class:`~magicboost_core.model.bundle.DemoModelMissingError` when it is not installed). ``device``:
    where to put it (None = the CPU it is loaded on)."""
    from ..model import MultiViewModel, load_demo_model

    model = load_demo_model() if source in DEMO_SOURCES else MultiViewModel.from_pretrained(source)
    model = model.eval()
    if device is not None:
        model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def read_views(paths, preset) -> torch.Tensor:
    """The condition views of a :class:`~magicboost_core.geometry.presets.ViewPreset` as (A, H, W, 4) RGBA
    float in [0, 1], anchor order: A image files, or one grid image split with the preset's layout
    (row-major). Read by :func:`~magicboost_core.images.read_view_files` (regular files, size caps, 16-bit
    PNGs scaled; no alpha -> alpha 1)."""
    from ..geometry.presets import split_grid_for_preset
    from ..images import read_view_files

    if is_grid_input(len(paths), preset):
        return split_grid_for_preset(read_view_files(paths)[0], preset)
    return read_view_files(paths)


def is_grid_input(count: int, preset) -> bool:
    """Whether ``count`` view files are one grid image of ``preset`` (True) or one file per anchor (False);
    ValueError naming the fix for any other count."""
    if count == 1 and preset.num_views > 1:
        if preset.grid is None:
            raise ValueError(f"one view image given, but preset {preset.name!r} has no grid layout; "
                             f"give its {preset.num_views} views as separate files.")
        return True
    if count != preset.num_views:
        raise ValueError(f"{count} view images given; preset {preset.name!r} needs {preset.num_views} "
                         "(in its anchor order) or one grid image.")
    return False


def refine_views(model, mesh, views: torch.Tensor, config, progress=None, generator: torch.Generator | None = None):
    """Refine ``mesh`` from its condition ``views`` with ``model``.

    Args:
        model: from :func:`load_model`.
        mesh: the coarse :class:`~magicboost_core.geometry.mesh.Mesh` (z-up, caller's frame).
        views: (A, H, W, 4) RGBA float in [0, 1] in the preset's anchor order (alpha 1 = object).
        config: the :class:`~magicboost_core.refine.config.RefineConfig` (its ``preset`` gives the poses).
        progress: ``progress(step, total, losses)`` after each step.
        generator: for the view encoding's posterior sample (None = torch's global generator).
    Returns: the :class:`~magicboost_core.refine.loop.RefineResult` (mesh in the caller's frame).
    """
    from ..geometry.presets import get_preset
    from ..model.conditioning import encode_views
    from .loop import refine_mesh

    preset = get_preset(config.preset)
    cond = encode_views(model, views, torch.tensor(preset.elevations), torch.tensor(preset.azimuths),
                        masks=views[..., 3:4], generator=generator)
    return refine_mesh(model, cond, mesh, config, reference_views=(views[..., :3], views[..., 3:4]),
                       progress=progress)
