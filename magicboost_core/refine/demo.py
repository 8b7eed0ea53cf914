"""``magicboost demo`` and ``magicboost refine``: end-to-end refinement from the command line.

Demo (``run_demo``): the shipped sample toy is the ground truth; its coarse version (decimated,
jittered, blurred and dulled colours) is what gets refined; the four Instant3D condition views are
rendered from the ground truth; the shipped demo model (pixel-space, 32 px) drives SDS and the Anchor
Iterative Update on CPU. ``output/`` receives the refined GLB, the coarse GLB, a before/after
turntable grid and ``metrics.json`` (PSNR/SSIM at held-out poses, Chamfer, normal consistency and
saturation, coarse vs refined, both against the ground truth). Without the demo model the demo says
so and exits non-zero: no result is ever faked.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..geometry.camera import orbit_cameras
from ..geometry.presets import get_preset
from ..images import read_image_file
from ..validate import prepare_output_dir, resolve_device
from .config import MAX_RENDER_RESOLUTION, MAX_STEPS, RefineConfig

__all__ = ["DemoModelMissing", "load_demo", "demo_config", "evaluate_against", "run_demo", "register",
           "HELD_OUT_POSES"]

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo_model"
#: Held-out evaluation poses (elevation, azimuth): none coincides with a condition view.
HELD_OUT_POSES = [(20.0, 45.0), (20.0, 135.0), (20.0, 225.0), (20.0, 315.0), (-10.0, 30.0), (-10.0, 210.0),
                  (35.0, 0.0), (35.0, 180.0)]


class DemoModelMissing(FileNotFoundError):
    """The small demo multi-view model is not in this checkout."""


def load_demo(device=None):
    """The shipped demo ``MultiViewModel`` (eval mode) or :class:`DemoModelMissing`."""
    try:
        from ..model import load_demo_model
    except ImportError:
        load_demo_model = None
    if load_demo_model is not None:
        try:
            model = load_demo_model()
        except FileNotFoundError as e:
            raise DemoModelMissing(f"the demo model is not available: {e}") from e
    else:
        if not (DEMO_MODEL_DIR / "model.safetensors").exists():
            raise DemoModelMissing(
                f"the demo model is not in this checkout ({DEMO_MODEL_DIR}/model.safetensors is missing); "
                "the demo cannot run without it and produced nothing.")
        try:
            from ..model import MultiViewModel
        except ImportError as e:
            raise DemoModelMissing(f"the multi-view model code is not part of this build ({e}).") from e
        model = MultiViewModel.from_pretrained(str(DEMO_MODEL_DIR))
    model = model.eval()
    if device is not None:
        model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def demo_config(steps: int | None = None, **kw) -> RefineConfig:
    """The demo model's refinement profile (:data:`magicboost_core.refine.profiles.DEMO_PROFILE`: 200 steps,
    ~1 min per asset on 2 CPU cores), with ``steps`` and any other field in ``kw`` changed."""
    from .profiles import resolve_config

    settings = dict(kw)
    if steps is not None:
        settings["steps"] = steps
    return resolve_config(profile="demo", settings=settings)


def _views(mesh, preset, resolution: int):
    from ..render.renderer import render

    cams = preset.cameras(resolution)
    with torch.no_grad():
        out = render(mesh, cams, mode="albedo", background=1.0)
    return out.rgb.clamp(0, 1), out.alpha.clamp(0, 1)


def _condition(model, images, masks, preset):
    from ..model.conditioning import encode_views

    rgba = torch.cat([images, masks], -1)
    return encode_views(model, rgba, torch.tensor(preset.elevations), torch.tensor(preset.azimuths), masks=masks)


@torch.no_grad()
def evaluate_against(mesh, ground_truth, resolution: int = 128, num_points: int = 20000, distance: float = 1.5,
                     fovy_deg: float = 49.134) -> dict:
    """Metrics of ``mesh`` vs ``ground_truth`` (same frame): PSNR/SSIM of albedo renders at
    :data:`HELD_OUT_POSES`, Chamfer distance, normal consistency, mean saturation of the renders."""
    from ..eval.image_metrics import psnr, ssim
    from ..eval.mesh_metrics import mean_saturation, mesh_distances
    from ..render.renderer import render

    el, az = zip(*HELD_OUT_POSES)
    cams = orbit_cameras(list(el), list(az), distance, fovy_deg, width=resolution)
    a = render(mesh.to("cpu"), cams, mode="albedo", background=1.0)
    b = render(ground_truth.to("cpu"), cams, mode="albedo", background=1.0)
    d = mesh_distances(mesh.to("cpu"), ground_truth.to("cpu"), num_points=num_points)
    return {
        "psnr": float(psnr(a.rgb.clamp(0, 1), b.rgb.clamp(0, 1)).mean()),
        "ssim": float(ssim(a.rgb.clamp(0, 1), b.rgb.clamp(0, 1)).mean()),
        "chamfer": d["chamfer"],
        "normal_consistency": d["normal_consistency"],
        "saturation": mean_saturation(a.rgb, a.alpha),
        "saturation_ground_truth": mean_saturation(b.rgb, b.alpha),
    }


def refine_asset(model, ground_truth, coarse, config: RefineConfig, guidance=None, view_resolution: int = 128,
                 progress=None):
    """Render the condition views from ``ground_truth``, refine ``coarse``; returns (result, metrics dict)."""
    from .loop import refine_mesh

    preset = get_preset(config.preset)
    images, masks = _views(ground_truth, preset, view_resolution)
    if guidance is None and model is not None:
        cond = _condition(model, images, masks, preset)
    else:
        from types import SimpleNamespace

        cond = SimpleNamespace(images=images, masks=masks, elevations=list(preset.elevations),
                               azimuths=list(preset.azimuths))
    result = refine_mesh(model, cond, coarse, config, guidance=guidance, progress=progress,
                         reference_views=(images, masks))
    metrics = {"coarse": evaluate_against(coarse, ground_truth), "refined": evaluate_against(result.mesh, ground_truth),
               "seconds": result.seconds, "steps": result.steps_done}
    return result, metrics


def run_demo(out_dir="output", steps: int | None = None, device=None, log=print) -> dict:
    """Refine the shipped sample asset; write GLBs, the before/after grid and metrics to ``out_dir``.

    Returns the metrics dict. Raises :class:`DemoModelMissing` when the demo model is absent.
    """
    from .export import export_mesh, save_turntable, write_metrics
    from .sample_asset import load_sample_asset, make_coarse

    t0 = time.time()
    model = load_demo(device)
    gt = load_sample_asset()
    coarse = make_coarse(gt)
    cfg = demo_config(steps)
    log(f"demo: refining the sample toy ({coarse.num_vertices} vertices) for {cfg.steps} steps with the demo model "
        f"on {device or 'cpu'} ...")
    last = {"t": time.time()}

    def progress(step, total, losses):
        if time.time() - last["t"] > 10 or step == total:
            last["t"] = time.time()
            log(f"  step {step}/{total}  " + "  ".join(f"{k} {v:.4g}" for k, v in losses.items() if k not in ("view", "t")))

    out = prepare_output_dir(out_dir)
    result, metrics = refine_asset(model, gt, coarse, cfg, progress=progress)
    paths = {
        "refined": str(export_mesh(result.mesh, out / "refined.glb")),
        "coarse": str(export_mesh(coarse, out / "coarse.glb")),
        "ground_truth": str(export_mesh(gt, out / "ground_truth.glb")),
        "turntable": str(save_turntable([coarse, result.mesh, gt], out / "before_after.png")),
    }
    metrics.update(total_seconds=time.time() - t0, files=paths, log=result.log, config=cfg.to_dict(),
                   rows_of_before_after_png=["coarse shaded", "coarse albedo", "refined shaded", "refined albedo",
                                             "ground truth shaded", "ground truth albedo"])
    paths["metrics"] = str(write_metrics(metrics, out / "metrics.json"))
    c, r = metrics["coarse"], metrics["refined"]
    log(f"demo: done in {metrics['total_seconds']:.0f} s. PSNR {c['psnr']:.2f} -> {r['psnr']:.2f} dB, "
        f"SSIM {c['ssim']:.3f} -> {r['ssim']:.3f}, Chamfer {c['chamfer']:.4f} -> {r['chamfer']:.4f}, "
        f"normal consistency {c['normal_consistency']:.3f} -> {r['normal_consistency']:.3f}, "
        f"saturation {c['saturation']:.3f} -> {r['saturation']:.3f} (ground truth {r['saturation_ground_truth']:.3f}).")
    for k, v in paths.items():
        log(f"  {k}: {v}")
    metrics["interrupted"] = result.interrupted
    return metrics


# --------------------------------------------------------------------------------------------------
def _bounded_int(name: str, lo: int, hi: int):
    """argparse ``type`` for a whole number in [lo, hi]; errors name ``name`` and the range."""
    import argparse

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer; got {text!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be in [{lo}, {hi}]; got {n}")
        return n

    return parse


_positive_steps = _bounded_int("steps", 1, MAX_STEPS)
_resolution = _bounded_int("resolution", 8, MAX_RENDER_RESOLUTION)


def _cmd_demo(args) -> int:
    try:
        metrics = run_demo(args.out, steps=args.steps, device=_device(args))
    except DemoModelMissing as e:
        print(f"magicboost demo: {e}", file=sys.stderr)
        return 2
    if metrics.get("interrupted"):
        print(f"magicboost demo: interrupted; saved the best state so far to {args.out}/", file=sys.stderr)
        return 130
    return 0


def _load_views(paths, preset) -> torch.Tensor:
    """(A, H, W, 4) float RGBA in [0, 1] from the view image files (anchor order; read by
    :func:`~magicboost_core.images.read_image_file`: regular files, size caps, 16-bit PNGs scaled)."""
    if len(paths) == 1 and preset.grid is not None:
        raise ValueError(f"one image given; pass the {preset.num_views} views of the {preset.name} preset as separate files "
                         f"in anchor order (azimuths {list(preset.azimuths)}).")
    if len(paths) != preset.num_views:
        raise ValueError(f"{len(paths)} view images given but the {preset.name} preset needs {preset.num_views}.")
    imgs = [torch.from_numpy(read_image_file(p, "view image")[0]) for p in paths]
    sizes = {tuple(i.shape[:2]) for i in imgs}
    if len(sizes) != 1:
        raise ValueError(f"the view images have different sizes {sorted(sizes)}; resize them to one size first.")
    return torch.stack(imgs)


def refine_config_from_args(args, model) -> RefineConfig:
    """The RefineConfig of ``magicboost refine``: the model's profile (``refine.profiles.resolve_config``),
    then ``--config``, then ``--set`` and the explicit flags (``--steps``, ``--resolution``, ``--seed``,
    ``--condition-view-weight``, ``--align``); flags left out keep the profile's values."""
    from .config import load_config_file, parse_settings
    from .profiles import resolve_config

    file_settings = load_config_file(args.config) if getattr(args, "config", None) else None
    settings = parse_settings(getattr(args, "set", None) or [])
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


def _device(args):
    """``--device`` checked against this machine (:func:`~magicboost_core.validate.resolve_device`); None = CPU."""
    return resolve_device(args.device) if args.device else None


def _load_model(args):
    device = _device(args)
    if args.model:
        from ..model import MultiViewModel

        model = MultiViewModel.from_pretrained(args.model).eval()
        return model.to(device) if device is not None else model
    return load_demo(device)


def _cmd_refine(args) -> int:
    from ..geometry.mesh_io import load_mesh
    from ..model.conditioning import encode_views
    from .export import export_mesh, save_turntable, write_metrics
    from .loop import refine_mesh

    preset = get_preset(args.preset)
    out = prepare_output_dir(args.out)
    views = _load_views(args.views, preset)
    mesh = load_mesh(args.mesh, merge_seams=True)
    model = _load_model(args)
    cfg = refine_config_from_args(args, model)
    print(f"refine: {cfg.steps} steps, profile of model {getattr(getattr(model, 'info', None), 'name', '?')!r} "
          f"(settings in {out / 'refine_log.json'})")
    cond = encode_views(model, views, torch.tensor(preset.elevations), torch.tensor(preset.azimuths),
                        masks=views[..., 3:4])
    result = refine_mesh(model, cond, mesh, cfg, reference_views=(views[..., :3], views[..., 3:4]),
                         progress=lambda s, n, l: print(f"step {s}/{n} " + " ".join(f"{k} {v:.4g}" for k, v in l.items()))
                         if s % 50 == 0 or s == n else None)
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
    if result.interrupted:
        print(f"magicboost refine: interrupted after {result.steps_done} steps; saved the best state so far "
              f"(step {result.best_step}) to {glb}.", file=sys.stderr)
        return 130
    return 0


def register(subparsers) -> None:
    """Add ``demo`` and ``refine`` to the ``magicboost`` command line."""
    d = subparsers.add_parser("demo", help="refine the shipped sample asset end to end with the demo model")
    d.add_argument("--out", default="output", help="output folder (default: output/)")
    d.add_argument("--steps", type=_positive_steps, default=None, help="refinement steps (default: the demo profile's 200)")
    d.add_argument("--device", default=None, help="torch device (default: cpu)")
    d.set_defaults(func=_cmd_demo)
    r = subparsers.add_parser(
        "refine", help="refine a coarse mesh from its multi-view images",
        description="Refine a coarse mesh with the loaded model's refinement profile (the best known setting for "
                    "it); every RefineConfig field can be changed with --set or --config. The mesh must sit in the "
                    "preset cameras' frame (z up, centred, the size the views show; see README 'Frame contract'); "
                    "--align fits scale, offset and axes to the views first.")
    r.add_argument("mesh", help="coarse mesh (GLB, OBJ, PLY)")
    r.add_argument("views", nargs="+", help="condition view images (RGBA PNG), in the preset's anchor order")
    r.add_argument("--preset", default="instant3d", help="instant3d (4 views) or instantmesh (6 views)")
    r.add_argument("--model", default=None, help="converted Magic-Boost model folder (default: the demo model)")
    r.add_argument("--profile", default=None, help="refinement profile to use instead of the model's "
                   "('official' or 'demo')")
    r.add_argument("--config", default=None, metavar="FILE.json",
                   help="JSON object of RefineConfig fields applied over the model's profile")
    r.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one RefineConfig field, e.g. --set steps=300 --set aiu.strength=0.2 (repeatable)")
    r.add_argument("--steps", type=_positive_steps, default=None, help="refinement steps (default: the profile's)")
    r.add_argument("--resolution", type=_resolution, default=None,
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
