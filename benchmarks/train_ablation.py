"""Ablation of the condition-view augmentations, and novel-view evaluation of the demo model.

Trains the small multi-view model twice at the same budget — augmentations on (``aug``) and off
(``noaug``) — and reports novel-view PSNR / SSIM on held-out procedural objects (seeds disjoint from
training) with clean condition views and with degraded ones (side views rendered from slightly wrong
poses, blurred and noisy, as coarse generators produce), next to the nearest-anchor baseline (copy the
condition view closest in azimuth). The CFG scale is chosen on a separate validation split.

    PYTHONPATH=. python benchmarks/train_ablation.py --steps 800 --out runs/ablation          # both arms
    PYTHONPATH=. python benchmarks/train_ablation.py --arms aug --steps 800 --out runs/ablation  # one arm
    PYTHONPATH=. python benchmarks/train_ablation.py --eval-only aug=runs/ablation/aug/model \
        noaug=runs/ablation/noaug/model shipped=magicboost_core/assets/demo_model --out runs/ablation

Writes ``<out>/results.json`` and ``<out>/results.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magicboost_core.train.augment import AugmentConfig  # noqa: E402
from magicboost_core.train.dataset import HELDOUT_FIRST_SEED, DataConfig, load_data  # noqa: E402
from magicboost_core.train.evaluate import denoise_psnr, evaluate  # noqa: E402
from magicboost_core.train.trainer import TrainConfig, Trainer  # noqa: E402

VAL_FIRST_SEED = HELDOUT_FIRST_SEED + 500_000


def train_arm(name: str, args) -> Path:
    data_cfg = DataConfig(num_objects=args.objects, targets_per_object=args.targets_per_object)
    data = load_data(data_cfg, args.cache)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, data=data_cfg,
                      augment=AugmentConfig(enabled=(name == "aug")), checkpoint_every=50)
    run = Path(args.out) / name
    trainer = Trainer(cfg, data, run)
    resume = (run / "checkpoint.pt").exists()
    summary = trainer.fit(resume=resume)
    trainer.export(run / "model")
    (run / "log.json").write_text(json.dumps({"summary": summary, "config": cfg.to_dict(),
                                              "history": trainer.history}, indent=1))
    print(f"[{name}] {summary}")
    return run / "model"


def eval_model(name: str, model_dir: Path, args, val, test) -> dict:
    from magicboost_core.model import MultiViewModel

    model = MultiViewModel.from_pretrained(str(model_dir)).eval()
    scales = [float(s) for s in args.cfg_grid.split(",")]
    val_psnr = {s: evaluate(model, val, steps=args.ddim_steps, cfg=s, seed=1)["psnr"] for s in scales}
    cfg = max(val_psnr, key=val_psnr.get)
    res = {"model": str(model_dir), "cfg": cfg, "val_psnr_by_cfg": val_psnr, "ddim_steps": args.ddim_steps}
    res["clean"] = evaluate(model, test, steps=args.ddim_steps, cfg=cfg, seed=2)
    res["degraded"] = evaluate(model, test, steps=args.ddim_steps, cfg=cfg, seed=2, degraded=True)
    res["degraded_labelled"] = evaluate(model, test, steps=args.ddim_steps, cfg=cfg, seed=2, degraded=True,
                                        labels=(500.0, 0.5))
    res["denoise_psnr"] = {
        f"t{t}_{'degraded' if deg else 'clean'}": denoise_psnr(model, test, t=t, degraded=deg, seed=3)
        for t in (200, 500, 800) for deg in (False, True)
    }
    print(f"[{name}] {json.dumps(res)}")
    return res


def markdown(results: dict) -> str:
    lines = ["| model | CFG | clean PSNR | clean SSIM | degraded PSNR | degraded SSIM | degraded + labels (500, 0.5) PSNR / SSIM |",
             "|---|---|---|---|---|---|---|"]
    base = None
    for name, r in results.items():
        c, d, dl = r["clean"], r["degraded"], r["degraded_labelled"]
        base = (c, d)
        lines.append(f"| {name} | {r['cfg']:g} | {c['psnr']:.2f} | {c['ssim']:.3f} | {d['psnr']:.2f} | {d['ssim']:.3f} "
                     f"| {dl['psnr']:.2f} / {dl['ssim']:.3f} |")
    if base is not None:
        c, d = base
        lines.append(f"| nearest anchor (baseline) | – | {c['baseline_psnr']:.2f} | {c['baseline_ssim']:.3f} "
                     f"| {d['baseline_psnr']:.2f} | {d['baseline_ssim']:.3f} | – |")
    lines += ["", "One-step denoising PSNR (x0 estimate of the target noised to t; clean | degraded condition views):", "",
              "| model | t=200 | t=500 | t=800 |", "|---|---|---|---|"]
    for name, r in results.items():
        d = r["denoise_psnr"]
        lines.append(f"| {name} | " + " | ".join(f"{d[f't{t}_clean']:.2f} / {d[f't{t}_degraded']:.2f}" for t in (200, 500, 800))
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--arms", default="aug,noaug", help="arms to train (comma list of aug, noaug)")
    p.add_argument("--eval-only", nargs="*", default=None, metavar="NAME=DIR", help="only evaluate these models")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--objects", type=int, default=1500)
    p.add_argument("--targets-per-object", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-objects", type=int, default=64)
    p.add_argument("--val-objects", type=int, default=24)
    p.add_argument("--ddim-steps", type=int, default=20)
    p.add_argument("--cfg-grid", default="1,3")
    p.add_argument("--cache", default=None)
    args = p.parse_args(argv)

    t0 = time.time()
    if args.eval_only is not None:
        models = dict(item.split("=", 1) for item in args.eval_only)
    else:
        models = {arm: train_arm(arm, args) for arm in args.arms.split(",") if arm}
    if args.no_eval:
        return 0
    test = load_data(DataConfig(num_objects=args.eval_objects, first_seed=HELDOUT_FIRST_SEED, targets_per_object=1,
                                perturbed_anchors=True), args.cache)
    val = load_data(DataConfig(num_objects=args.val_objects, first_seed=VAL_FIRST_SEED, targets_per_object=1), args.cache)
    results = {name: eval_model(name, Path(d), args, val, test) for name, d in models.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    md = markdown(results)
    (out / "results.md").write_text(md)
    print(md)
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
