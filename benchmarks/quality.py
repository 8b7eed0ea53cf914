"""Public quality benchmark of refinement (issue #11): 8 procedural textured assets, refined as a user does.

    python benchmarks/quality.py                              # all assets, CLI defaults (the model's profile)
    python benchmarks/quality.py --steps 200 --assets crate duck
    python benchmarks/quality.py --variant views-only        # predefined ablation (see VARIANTS)
    python benchmarks/quality.py --variant mine --set lambda_sds=0 --set aiu.enabled=false
    python benchmarks/quality.py --cli-arg=--resolution --cli-arg=128      # any raw CLI flag
    python benchmarks/quality.py --out output/quality --json rows.json

Protocol (per asset, :mod:`quality_assets`): the textured ground truth at bounding radius 0.55; the
coarse version = decimation to 25 % of the faces + texture box-downsampled 8x and desaturated to 60 %
+ 1 % RMS vertex jitter (seed = asset index); the 4 Instant3D condition views rendered from the
ground truth at 128 px (albedo, white background, alpha) and written as RGBA PNGs, the coarse mesh
as GLB; then exactly ``magicboost refine coarse.glb v0.png v1.png v2.png v3.png --preset instant3d
--out DIR`` (in process through ``magicboost_core.cli.main``, or ``--subprocess``) plus only the
flags given here (``--steps``, ``--set``, ``--cli-arg``); the refined GLB is read back from disk.

Scores, coarse and refined vs the ground truth: PSNR and SSIM of albedo renders at 8 held-out poses
(elevation 20 and -10 x azimuth 45/135/225/315, 256 px, Instant3D camera distance and field of view),
Chamfer distance on 20k surface samples per mesh (mean of plain nearest-neighbour distances, both
directions; ``floor`` = the ground truth against itself with other samples), mean HSV saturation of the
foreground. Prints a Markdown table (per asset + mean), the acceptance checks of issue #11, writes
JSON and, per asset, ``renders.png`` (rows: coarse, refined, ground truth at the 8 poses).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_assets import ASSET_NAMES, make_asset, make_coarse_textured  # noqa: E402

#: Held-out evaluation poses (elevation, azimuth) in degrees: none is a condition view.
EVAL_POSES = [(e, a) for e in (20.0, -10.0) for a in (45.0, 135.0, 225.0, 315.0)]
EVAL_RESOLUTION = 256
VIEW_RESOLUTION = 128
CHAMFER_POINTS = 20000
#: Named ablations: extra ``--set`` overrides (field names of ``refine.config.RefineConfig``).
VARIANTS = {
    "default": [],
    "views-only": ["lambda_sds=0", "aiu.enabled=false"],
}


def write_inputs(asset_dir: Path, coarse, ground_truth) -> tuple[Path, list[Path]]:
    """Write ``coarse.glb`` and the 4 Instant3D condition views ``v0..v3.png`` (RGBA, from the ground truth)."""
    from PIL import Image

    from magicboost_core.geometry.mesh_io import save_mesh
    from magicboost_core.geometry.presets import get_preset
    from magicboost_core.demo.sample_asset import render_views

    asset_dir.mkdir(parents=True, exist_ok=True)
    glb = save_mesh(coarse, asset_dir / "coarse.glb", overwrite=True)
    rgb, alpha = render_views(ground_truth, get_preset("instant3d"), VIEW_RESOLUTION)
    paths = []
    for i, rgba in enumerate(torch.cat([rgb, alpha], -1)):
        p = asset_dir / f"v{i}.png"
        Image.fromarray((rgba.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8), "RGBA").save(p)
        paths.append(p)
    return glb, paths


def refine_command(glb: Path, views: list[Path], out: Path, steps: int | None, sets: list[str],
                   cli_args: list[str]) -> list[str]:
    """The ``magicboost`` argv a user would type (no tuning flags unless asked for)."""
    argv = ["refine", str(glb), *map(str, views), "--preset", "instant3d", "--out", str(out)]
    if steps is not None:
        argv += ["--steps", str(steps)]
    for s in sets:
        argv += ["--set", s]
    return argv + list(cli_args)


def run_cli(argv: list[str], log_path: Path, use_subprocess: bool) -> float:
    """Run ``magicboost *argv`` with its output in ``log_path``; returns wall seconds. Raises on failure."""
    t0 = time.time()
    with open(log_path, "w") as log:
        if use_subprocess:
            env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            rc = subprocess.call([sys.executable, "-m", "magicboost_core.cli", *argv], stdout=log, stderr=log, env=env)
        else:
            from magicboost_core.cli import main

            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                try:
                    rc = main(argv)
                except SystemExit as e:  # argparse: unknown flag (e.g. --set on a CLI without it)
                    rc = e.code if isinstance(e.code, int) else 2
    if rc != 0:
        tail = "".join(open(log_path).readlines()[-15:])
        raise RuntimeError(f"magicboost {' '.join(argv)} failed (exit {rc}); last lines of {log_path}:\n{tail}")
    return time.time() - t0


def refined_glb(out: Path) -> Path:
    found = sorted(out.glob("*_refined*.glb"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"the refine command wrote no *_refined.glb into {out}.")
    return found[-1]


@torch.no_grad()
def eval_renders(mesh):
    """Albedo renders (8, 256, 256, 3) and alpha (8, 256, 256, 1) at :data:`EVAL_POSES`."""
    from magicboost_core.geometry.camera import orbit_cameras
    from magicboost_core.geometry.presets import get_preset
    from magicboost_core.render.renderer import render

    preset = get_preset("instant3d")
    el, az = zip(*EVAL_POSES)
    cams = orbit_cameras(list(el), list(az), preset.distance, preset.fovy_deg, width=EVAL_RESOLUTION)
    out = render(mesh.to("cpu"), cams, mode="albedo", background=1.0)
    return out.rgb.clamp(0, 1), out.alpha.clamp(0, 1)


@torch.no_grad()
def score(mesh, gt_renders, ground_truth) -> tuple[dict, torch.Tensor]:
    """{'psnr', 'ssim', 'chamfer', 'saturation'} of ``mesh`` vs the ground truth, and its renders."""
    from magicboost_core.eval.image_metrics import psnr, ssim
    from magicboost_core.eval.mesh_metrics import mean_saturation, mesh_distances

    rgb, alpha = eval_renders(mesh)
    metrics = {"psnr": float(psnr(rgb, gt_renders).mean()), "ssim": float(ssim(rgb, gt_renders).mean()),
               "chamfer": mesh_distances(mesh, ground_truth, num_points=CHAMFER_POINTS)["chamfer"],
               "saturation": mean_saturation(rgb, alpha)}
    return metrics, rgb


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    from PIL import Image

    img = torch.cat([torch.cat(list(r), 1) for r in rows], 0)
    Image.fromarray((img.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)).save(path)


def run_asset(index: int, name: str, out: Path, args, sets: list[str]) -> dict:
    """Build, degrade, refine and score one asset; returns its row."""
    from magicboost_core.eval.mesh_metrics import mean_saturation
    from magicboost_core.geometry.mesh_io import load_mesh

    t0 = time.time()
    asset = make_asset(name)
    gt = asset.mesh
    coarse = make_coarse_textured(asset, seed=index)
    asset_dir = out / name
    glb, views = write_inputs(asset_dir, coarse, gt)
    run_dir = asset_dir / "refined"
    argv = refine_command(glb, views, run_dir, args.steps, sets, args.cli_arg)
    error = None
    t_cli = time.time()
    try:
        seconds = float("nan") if args.rescore else run_cli(argv, asset_dir / "refine.log", args.subprocess)
        refined = load_mesh(refined_glb(run_dir))
    except (RuntimeError, FileNotFoundError) as e:  # a failed refinement is a result too: scored as such
        error, seconds, refined = str(e).splitlines()[-1], time.time() - t_cli, None
    coarse_loaded = load_mesh(glb)  # what the CLI refined (8-bit texture after the GLB round trip)

    gt_rgb, gt_alpha = eval_renders(gt)
    c, c_rgb = score(coarse_loaded, gt_rgb, gt)
    r, r_rgb = score(refined, gt_rgb, gt) if refined is not None else (None, torch.ones_like(gt_rgb))
    save_grid([c_rgb, r_rgb, gt_rgb], asset_dir / "renders.png")
    return {"asset": name, "faces_gt": gt.num_faces, "faces_coarse": coarse.num_faces, "coarse": c, "refined": r,
            "error": error,
            "ground_truth": {"saturation": mean_saturation(gt_rgb, gt_alpha), "chamfer_floor": chamfer_floor(gt, name, out)},
            "refine_seconds": seconds, "asset_seconds": time.time() - t0, "command": "magicboost " + " ".join(argv)}


def chamfer_floor(ground_truth, name: str, out: Path) -> float:
    """Chamfer of the ground truth against itself (independent samples): the metric's noise floor.

    Cached in ``OUT/../chamfer_floor.json`` (it depends only on the asset) to save ~10 s per asset.
    """
    from magicboost_core.eval.mesh_metrics import mesh_distances

    cache = out.parent / "chamfer_floor.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    if name not in known:
        known[name] = mesh_distances(ground_truth, ground_truth, num_points=CHAMFER_POINTS)["chamfer"]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=2) + "\n")
    return float(known[name])


def mean_row(rows: list[dict]) -> dict:
    """Means over the assets whose refinement finished (failed ones are listed by the checks)."""
    rows = [r for r in rows if r["refined"] is not None] or rows[:0]
    if not rows:
        raise RuntimeError("the refine command failed on every asset; see the refine.log files.")
    avg = lambda get: float(np.mean([get(r) for r in rows]))  # noqa: E731
    keys = ("psnr", "ssim", "chamfer", "saturation")
    return {"asset": "mean", "coarse": {k: avg(lambda r: r["coarse"][k]) for k in keys},
            "refined": {k: avg(lambda r: r["refined"][k]) for k in keys},
            "ground_truth": {k: avg(lambda r: r["ground_truth"][k]) for k in ("saturation", "chamfer_floor")},
            "refine_seconds": avg(lambda r: r["refine_seconds"]), "asset_seconds": avg(lambda r: r["asset_seconds"])}


def acceptance(rows: list[dict], mean: dict, max_seconds: float = 90.0) -> list[tuple[str, bool, str]]:
    """Issue #11's acceptance checks: (name, passed, detail)."""
    c, r, g = mean["coarse"], mean["refined"], mean["ground_truth"]
    failed = [x["asset"] for x in rows if x["refined"] is None]
    rows = [x for x in rows if x["refined"] is not None]
    worst = min(rows, key=lambda x: x["refined"]["psnr"] - x["coarse"]["psnr"])
    chamfer_bad = [x["asset"] for x in rows if x["refined"]["chamfer"] > 1.05 * x["coarse"]["chamfer"]]
    slow = max(rows, key=lambda x: x["refine_seconds"])
    sat_err = abs(r["saturation"] - g["saturation"]) / max(g["saturation"], 1e-9)
    return [
        ("refinement finished on every asset", not failed, "all" if not failed else "failed: " + ", ".join(failed)),
        ("mean PSNR >= coarse + 1.0 dB", r["psnr"] >= c["psnr"] + 1.0, f"{c['psnr']:.2f} -> {r['psnr']:.2f} dB"),
        ("no asset below coarse - 0.3 dB", worst["refined"]["psnr"] >= worst["coarse"]["psnr"] - 0.3,
         f"worst {worst['asset']}: {worst['refined']['psnr'] - worst['coarse']['psnr']:+.2f} dB"),
        ("Chamfer <= coarse + 5 % on every asset", not chamfer_bad,
         "all within" if not chamfer_bad else "worse: " + ", ".join(chamfer_bad)),
        ("mean saturation within 10 % of ground truth", sat_err <= 0.10,
         f"{r['saturation']:.3f} vs {g['saturation']:.3f} ({100 * sat_err:.1f} %)"),
        (f"<= {max_seconds:.0f} s per asset (refine command)", slow["refine_seconds"] <= max_seconds,
         f"max {slow['refine_seconds']:.0f} s ({slow['asset']}), mean {mean['refine_seconds']:.0f} s"),
    ]


def markdown(rows: list[dict], mean: dict) -> str:
    head = ("| asset | PSNR coarse -> refined | SSIM coarse -> refined | Chamfer coarse -> refined (floor) "
            "| saturation coarse -> refined (GT) | s |\n|---|---|---|---|---|---|")
    lines = [head]
    for x in rows + [mean]:
        c, r, g = x["coarse"], x["refined"], x["ground_truth"]
        name = f"**{x['asset']}**" if x["asset"] == "mean" else x["asset"]
        if r is None:
            lines.append(f"| {name} | {c['psnr']:.2f} -> failed | {c['ssim']:.3f} -> failed | {c['chamfer']:.4f} -> failed "
                         f"({g['chamfer_floor']:.4f}) | {c['saturation']:.3f} -> failed ({g['saturation']:.3f}) | "
                         f"{x['refine_seconds']:.0f} |")
            continue
        lines.append(f"| {name} | {c['psnr']:.2f} -> {r['psnr']:.2f} | {c['ssim']:.3f} -> {r['ssim']:.3f} | "
                     f"{c['chamfer']:.4f} -> {r['chamfer']:.4f} ({g['chamfer_floor']:.4f}) | "
                     f"{c['saturation']:.3f} -> {r['saturation']:.3f} ({g['saturation']:.3f}) | "
                     f"{x['refine_seconds']:.0f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--assets", nargs="+", default=list(ASSET_NAMES), choices=ASSET_NAMES, metavar="NAME",
                   help=f"subset of {', '.join(ASSET_NAMES)}")
    p.add_argument("--steps", type=int, default=None, help="pass --steps N to the CLI (default: the CLI's own)")
    p.add_argument("--variant", default="default",
                   help=f"a name for this run; predefined: {', '.join(VARIANTS)} (their --set overrides are added)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="forwarded to the CLI as --set")
    p.add_argument("--cli-arg", action="append", default=[], metavar="TOKEN",
                   help="raw extra CLI token (repeat; write --cli-arg=--flag for tokens starting with '-')")
    p.add_argument("--out", default="output/quality", help="folder for inputs, refined meshes, renders, JSON")
    p.add_argument("--json", default=None, help="JSON path (default: OUT/quality_<variant>.json)")
    p.add_argument("--subprocess", action="store_true", help="run the CLI in a subprocess instead of in process")
    p.add_argument("--rescore", action="store_true",
                   help="do not run the CLI: score the refined GLBs an earlier run left in OUT (seconds = nan)")
    p.add_argument("--tables", nargs="+", default=None, metavar="JSON",
                   help="only print the table and checks of earlier runs' JSON files (rows concatenated)")
    return p.parse_args(argv)


def report(rows: list[dict], header: str) -> tuple[dict, list]:
    """Print the Markdown table and the acceptance checks; returns (mean row, checks)."""
    mean = mean_row(rows)
    checks = acceptance(rows, mean)
    print(header + "\n")
    print(markdown(rows, mean))
    print()
    for what, ok, detail in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {what}: {detail}")
    return mean, checks


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tables:
        runs = [json.loads(Path(p).read_text()) for p in args.tables]
        report([r for run in runs for r in run["rows"]], "runs: " + "; ".join(
            f"{p} (variant {run['variant']!r}, steps {run['steps']}, --set {run['set']}, extra {run['cli_args']})"
            for p, run in zip(args.tables, runs)))
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    sets = VARIANTS.get(args.variant, []) + list(args.set)
    out = Path(args.out) / args.variant
    t0 = time.time()
    rows = []
    for name in args.assets:
        row = run_asset(ASSET_NAMES.index(name), name, out, args, sets)
        rows.append(row)
        r = row["refined"] or {"psnr": float("nan"), "chamfer": float("nan")}
        print(f"{name}: PSNR {row['coarse']['psnr']:.2f} -> {r['psnr']:.2f}, Chamfer {row['coarse']['chamfer']:.4f} -> "
              f"{r['chamfer']:.4f}, {row['refine_seconds']:.0f} s" + (f"  REFINE FAILED: {row['error']}" if row["error"] else ""),
              flush=True)
    mean, checks = report(rows, f"\nvariant {args.variant!r}, steps {args.steps or 'CLI default'}, --set {sets or 'none'}, "
                                f"extra {args.cli_arg or 'none'}; torch threads {torch.get_num_threads()}; "
                                f"total {time.time() - t0:.0f} s")
    result = {"variant": args.variant, "steps": args.steps, "set": sets, "cli_args": args.cli_arg,
              "eval_poses": EVAL_POSES, "machine": platform.platform(), "torch_threads": torch.get_num_threads(),
              "total_seconds": time.time() - t0, "rows": rows, "mean": mean,
              "checks": [{"check": w, "passed": ok, "detail": d} for w, ok, d in checks]}
    path = Path(args.json) if args.json else out / f"quality_{args.variant}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
