"""Refinement benchmarks: speed/memory, and the AIU ablation.

    python benchmarks/refine.py speed [--steps 20]          # CPU with the demo model (random weights if absent);
                                                            # GPU full-size architecture (random weights) if CUDA
    python benchmarks/refine.py ablation [--steps 200] [--objects sample_toy pawn] [--out rows.json]
                                                            # AIU vs no AIU vs plain L1 vs reference only
    python benchmarks/refine.py tables a.json b.json        # one table from several ablation --out files
    python benchmarks/refine.py gpu [--steps 20]            # only the full-size GPU timing

Ablation variants (``refine.config.ablation_config``): ``aiu`` = SDS + Anchor Iterative Update;
``no_aiu`` = AIU off (reconstruction + SDS); ``plain_l1`` = the condition views themselves as L1 pseudo
targets instead of SDEdit'ed pseudo views; ``reference_only`` = no diffusion at all (the floor). All
variants keep the rest of the demo config (anchor reconstruction term included, see
``demo.run.demo_config``). Every run refines the *coarse* version of the object (``make_coarse``) against
the 4 Instant3D views rendered from its ground truth; metrics at held-out poses (``eval.held_out.HELD_OUT_POSES``).
Prints Markdown tables for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magicboost_core.refine.config import ABLATION_VARIANTS, ablation_config  # noqa: E402
from magicboost_core.demo.run import demo_config, refine_asset  # noqa: E402
from magicboost_core.demo.sample_asset import load_sample_asset, make_coarse, procedural_objects  # noqa: E402


def _demo_model():
    from magicboost_core.model.bundle import DemoModelMissingError
    from magicboost_core.refine.pipeline import load_model

    try:
        return load_model(), "shipped demo model"
    except DemoModelMissingError:
        from magicboost_core.model import build_demo_model

        m = build_demo_model().eval()
        for p in m.parameters():
            p.requires_grad_(False)
        return m, "demo ARCHITECTURE with random weights (demo model not installed)"


def speed(steps: int):
    model, what = _demo_model()
    gt = load_sample_asset()
    coarse = make_coarse(gt)
    cfg = demo_config(steps)
    t0 = time.time()
    result, metrics = refine_asset(model, gt, coarse, cfg)
    dt = result.seconds
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"CPU ({torch.get_num_threads()} threads), {what}: {steps} steps of the demo config "
          f"({cfg.render_resolution}px renders, batch {cfg.batch_size}, {coarse.num_faces} faces -> subdivided): "
          f"{steps / dt:.2f} steps/s, {dt:.1f} s; peak RSS {rss:.0f} MiB; end-to-end incl. setup/eval {time.time() - t0:.1f} s")
    if torch.cuda.is_available():
        gpu(steps)


def gpu(steps: int):
    """Full-size architecture (SD-2.1 UNet + SD VAE + ViT-H image encoder) with random weights, 256 px, batch 4."""
    from magicboost_core.model.bundle import MultiViewModel, ModelInfo
    from magicboost_core.model.codec import SDVAECodec
    from magicboost_core.model.config import MultiViewUNetConfig
    from magicboost_core.model.image_encoder import CLIPImageEncoder
    from magicboost_core.model.unet import MultiViewUNet
    from magicboost_core.refine.config import RefineConfig

    if not torch.cuda.is_available():
        print("gpu: CUDA not available; skipped.")
        return
    dev = torch.device("cuda")
    cfg_u = MultiViewUNetConfig.full()
    z = torch.zeros(77, cfg_u.context_dim)
    model = MultiViewModel(MultiViewUNet(cfg_u), SDVAECodec(), CLIPImageEncoder(), z, z.clone(),
                           ModelInfo(name="full-random")).to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    gt = load_sample_asset()
    coarse = make_coarse(gt)
    cfg = RefineConfig(steps=steps, render_resolution=256, batch_size=4, texture_resolution=1024)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    result, _ = refine_asset(model, gt.to("cpu"), coarse, cfg, view_resolution=256)
    torch.cuda.synchronize()
    dt = result.seconds
    peak = torch.cuda.max_memory_allocated() / 2**30
    per_step = dt / steps
    print(f"GPU {torch.cuda.get_device_name()}: full-size architecture (random weights), 256 px, batch 4, bf16 UNet: "
          f"{steps / dt:.2f} steps/s ({per_step:.3f} s/step incl. AIU + setup), peak {peak:.1f} GiB; "
          f"2500 official steps would take ~{2500 * per_step / 60:.1f} min (paper: ~15 min on an A100).")


def ablation(steps: int, objects: list[str] | None = None, out: str | None = None):
    model, what = _demo_model()
    items = [("sample_toy", load_sample_asset())] + procedural_objects()
    if objects:
        items = [it for it in items if it[0] in objects]
    variants = list(ABLATION_VARIANTS)
    rows = []
    base = demo_config(steps)
    steps = base.steps
    for name, gt in items:
        coarse = make_coarse(gt)
        row = {"object": name}
        for v in variants:
            cfg = ablation_config(base, v)
            t = time.time()
            _, m = refine_asset(model, gt, coarse, cfg)
            row["coarse"] = m["coarse"]
            row[v] = m["refined"]
            row[v + "_s"] = time.time() - t
            print(f"{name:12s} {v:9s} PSNR {m['coarse']['psnr']:.2f} -> {m['refined']['psnr']:.2f}  "
                  f"Chamfer {m['coarse']['chamfer']:.4f} -> {m['refined']['chamfer']:.4f}  ({row[v + '_s']:.0f} s)",
                  flush=True)
        rows.append(row)
    if out:
        Path(out).write_text(json.dumps({"model": what, "steps": base.steps, "rows": rows}, indent=2))
    print_tables(rows, what, base)


def print_tables(rows: list[dict], what: str, base) -> None:
    """Markdown tables (one per metric) of ablation rows; columns: coarse, then every variant present."""
    variants = [v for v in ABLATION_VARIANTS if all(v in r for r in rows)]
    print(f"\nModel: {what}; {base.steps} steps of the demo config ({base.render_resolution} px renders, "
          f"batch {base.batch_size}, {base.color_mode}, lambda_sds {base.lambda_sds:g}, anchor term "
          f"{base.lambda_anchor_rgb:g}/{base.lambda_anchor_mask:g} side weight {base.anchor_side_weight:g}); "
          "metrics vs the ground truth at held-out poses.\n")
    for metric, fmt in (("psnr", "{:.2f}"), ("ssim", "{:.3f}"), ("chamfer", "{:.4f}"), ("normal_consistency", "{:.3f}"),
                        ("saturation", "{:.3f}")):
        print(f"| {metric} | coarse | " + " | ".join(variants) + " |")
        print("|---|---|" + "---|" * len(variants))
        for r in rows:
            print(f"| {r['object']} | {fmt.format(r['coarse'][metric])} | "
                  + " | ".join(fmt.format(r[v][metric]) for v in variants) + " |")
        print()


def tables(paths: list[str]) -> None:
    """Merge the JSON files of several ``ablation --out`` runs (e.g. objects split over processes) into one table."""
    rows, what, steps = [], None, None
    for p in paths:
        d = json.loads(Path(p).read_text())
        rows += d["rows"]
        what, steps = d["model"], d["steps"]
    print_tables(rows, what, demo_config(steps))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "ablation", "gpu", "tables"])
    p.add_argument("files", nargs="*", help="tables: JSON files written by ablation --out")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--objects", nargs="*", default=None)
    p.add_argument("--out", default=None, help="ablation: also write the rows as JSON here")
    a = p.parse_args(argv)
    if a.what == "speed":
        speed(a.steps or 20)
    elif a.what == "gpu":
        gpu(a.steps or 20)
    elif a.what == "tables":
        tables(a.files)
    else:
        ablation(a.steps, a.objects, a.out)


if __name__ == "__main__":
    main()
