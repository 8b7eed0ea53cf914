"""``magicboost refine``: refine your own coarse mesh from its multi-view images on the command line.

The settings come from the loaded model's refinement profile (:mod:`.profiles`), then ``--config``, then
``--set`` and the explicit flags; the model and the refine call are those of :mod:`.pipeline` (shared
with ``magicboost batch``). Writes the refined GLB and OBJ, a before/after turntable grid and
``refine_log.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..geometry.presets import get_preset
from ..validate import output_dir_for_run, resolve_device
from .config import MAX_RENDER_RESOLUTION, MAX_STEPS, RefineConfig

__all__ = ["register", "refine_config_from_args", "bounded_int", "parse_steps", "device_from_args"]


def bounded_int(name: str, lo: int, hi: int):
    """argparse ``type`` for a whole number in [lo, hi]; errors name ``name`` and the range."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer; got {text!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be in [{lo}, {hi}]; got {n}")
        return n

    return parse


#: argparse ``type`` of ``--steps`` (``magicboost refine`` and ``magicboost demo``).
parse_steps = bounded_int("steps", 1, MAX_STEPS)
_parse_resolution = bounded_int("resolution", 8, MAX_RENDER_RESOLUTION)


def device_from_args(args):
    """``--device`` checked against this machine (:func:`~magicboost_core.validate.resolve_device`); None = CPU."""
    return resolve_device(args.device) if args.device else None


def refine_config_from_args(args, model) -> RefineConfig:
    """The RefineConfig of ``magicboost refine``: the model's profile (``refine.profiles.resolve_config``),
    then ``--config``, then ``--set`` and the explicit flags (``--steps``, ``--resolution``, ``--seed``,
    ``--condition-view-weight``, ``--align``); flags left out keep the profile's values."""
    from .config import load_config_file, parse_settings
    from .profiles import resolve_config

    file_settings = load_config_file(args.config) if args.config else None
    settings = parse_settings(args.set or [])
    for flag, name in (("steps", "steps"), ("resolution", "render_resolution"), ("seed", "seed")):
        if getattr(args, flag, None) is not None:
            settings[name] = getattr(args, flag)
    if getattr(args, "condition_view_weight", None) is not None:
        lam = args.condition_view_weight * resolve_config(model, file_settings=file_settings).lambda_rgb
        settings.update(lambda_anchor_rgb=lam, lambda_anchor_mask=lam)
    if getattr(args, "align", False):
        settings["align"] = True
    return resolve_config(model, preset=args.preset, file_settings=file_settings, settings=settings,
                          profile=getattr(args, "profile", None))


def _print_progress(step: int, total: int, losses: dict) -> None:
    if step % 50 == 0 or step == total:
        print(f"step {step}/{total} " + " ".join(f"{k} {v:.4g}" for k, v in losses.items()))


def _write_outputs(args, preset, mesh, result, cfg: RefineConfig, out: Path) -> Path:
    """The refined GLB and OBJ, the before/after grid and ``refine_log.json``; returns the GLB's path."""
    from .export import export_mesh, save_turntable, write_metrics

    glb = export_mesh(result.mesh, out / (Path(args.mesh).stem + "_refined.glb"))
    obj = export_mesh(result.mesh, out / (Path(args.mesh).stem + "_refined.obj"))
    grid = save_turntable([mesh, result.mesh], out / "before_after.png", distance=preset.distance,
                          fovy_deg=preset.fovy_deg)
    write_metrics({"log": result.log, "losses_last": result.losses[-1] if result.losses else {},
                   "steps": result.steps_done, "seconds": result.seconds, "config": cfg.to_dict(),
                   "guard": {k: v for k, v in result.guard.items() if k != "checks"}, "frame_iou": result.frame_iou,
                   "interrupted": result.interrupted},
                  out / "refine_log.json")
    for m in result.log:
        print(m)
    print(f"wrote {glb}, {obj}, {grid}")
    return glb


def _cmd_refine(args) -> int:
    preset = get_preset(args.preset)
    with output_dir_for_run(args.out, "--out") as out:  # checked first; removed again if the run fails empty
        return _refine_into(args, preset, out)


def _refine_into(args, preset, out: Path) -> int:
    """The work of ``magicboost refine`` once ``--out`` is usable: read, refine, write into ``out``."""
    from ..geometry.mesh_io import load_mesh
    from .pipeline import load_model, read_views, refine_views

    views = read_views(args.views, preset)
    mesh = load_mesh(args.mesh, merge_seams=True)
    model = load_model(args.model, device_from_args(args))
    cfg = refine_config_from_args(args, model)
    print(f"refine: {cfg.steps} steps, profile of model {model.info.name!r} "
          f"(settings in {out / 'refine_log.json'})")
    result = refine_views(model, mesh, views, cfg, progress=_print_progress)
    glb = _write_outputs(args, preset, mesh, result, cfg, out)
    if result.interrupted:
        print(f"magicboost refine: interrupted after {result.steps_done} steps; saved the best state so far "
              f"(step {result.best_step}) to {glb}.", file=sys.stderr)
        return 130
    return 0


def register(subparsers) -> None:
    """Add ``refine`` to the ``magicboost`` command line."""
    r = subparsers.add_parser(
        "refine", help="refine a coarse mesh from its multi-view images",
        description="Refine a coarse mesh with the loaded model's refinement profile (the best known setting for "
                    "it); every RefineConfig field can be changed with --set or --config. The mesh must sit in the "
                    "preset cameras' frame (z up, centred, the size the views show; see README 'Frame contract'); "
                    "--align fits scale, offset and axes to the views first.")
    r.add_argument("mesh", help="coarse mesh (GLB, OBJ, PLY)")
    r.add_argument("views", nargs="+", help="condition view images (RGBA PNG), in the preset's anchor order, "
                                            "or one grid image in the preset's layout (e.g. Zero123++ 3x2)")
    r.add_argument("--preset", default="instant3d", help="instant3d (4 views) or instantmesh (6 views)")
    r.add_argument("--model", default=None, help="converted Magic-Boost model folder (default: the demo model)")
    r.add_argument("--profile", default=None, help="refinement profile to use instead of the model's "
                   "('official' or 'demo')")
    r.add_argument("--config", default=None, metavar="FILE.json",
                   help="JSON object of RefineConfig fields applied over the model's profile")
    r.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one RefineConfig field, e.g. --set steps=300 --set aiu.strength=0.2 (repeatable)")
    r.add_argument("--steps", type=parse_steps, default=None, help="refinement steps (default: the profile's)")
    r.add_argument("--resolution", type=_parse_resolution, default=None,
                   help="render resolution (default: the profile's)")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--condition-view-weight", type=float, default=None,
                   help="weight of the condition views at their own poses relative to the reference view "
                        "(default: the profile's; 0 = official)")
    r.add_argument("--align", action="store_true",
                   help="fit the mesh's scale, offset and axis permutation to the views' silhouettes first")
    r.add_argument("--device", default=None)
    r.add_argument("--out", default="output", help="output folder (created; checked for writing before any work)")
    r.set_defaults(func=_cmd_refine)
