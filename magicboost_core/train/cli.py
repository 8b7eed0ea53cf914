"""``magicboost train``: render procedural data, train the small multi-view model, export it.

Example::

    magicboost train --out runs/demo --steps 3000            # train (CPU by default, CUDA if present)
    magicboost train --out runs/demo --steps 3000 --resume   # continue from runs/demo/checkpoint.pt
    magicboost train --out runs/noaug --no-augment           # ablation arm without augmentations
    magicboost train --out runs/more --init-from magicboost_core/assets/demo_model   # fine-tune the shipped model
    magicboost train --out runs/eps --prediction-type epsilon   # the official objective (the first demo model's)

The exported model (EMA weights, ``MultiViewModel.save_pretrained`` layout) lands in ``<out>/model``
unless ``--export`` names another folder.

``magicboost eval-views`` measures novel-view sampling on the held-out procedural objects (seeds from
1,000,000; 4 Instant3D anchors; DDIM from pure noise or SDEdit from the nearest view) against the
nearest-view baseline; ``magicboost export-checkpoint`` turns a (running) training checkpoint into a
model folder::

    magicboost eval-views runs/v/checkpoint.pt --objects 16 --steps 20 --cfg 1,3
    magicboost export-checkpoint runs/v/checkpoint.pt runs/v/model-now
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

__all__ = ["register", "run_train", "run_eval", "run_export", "load_model_or_checkpoint"]

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the small multi-view model on procedural objects")
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, log.json, model/)")
    p.add_argument("--steps", type=int, default=1500, help="optimisation steps (default 1500)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--objects", type=int, default=1500, help="training objects to render (default 1500)")
    p.add_argument("--targets-per-object", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="disable the condition-view augmentations")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--cache", default=None, help="data cache folder (default .cache/magicboost)")
    p.add_argument("--export", default=None,
                   help="where to save the final model (default <out>/model); must be a new or empty folder (with "
                        "--resume the run's own <out>/model is replaced)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop early after this much wall time")
    p.add_argument("--model-channels", type=int, default=None, help="UNet width override")
    p.add_argument("--attention-resolutions", default=None, metavar="F,F,...",
                   help="UNet override: downsample factors with (multi-view) attention, e.g. 1,2,4 adds it at the "
                        "full 32 px (the demo architecture: 2,4)")
    p.add_argument("--data-workers", type=int, default=1,
                   help="processes that render the training data when it is not cached yet (default 1)")
    p.add_argument("--prediction-type", default=None, choices=["epsilon", "v_prediction", "sample"],
                   help="what the UNet learns to output (default: the demo model's, v_prediction, which samples "
                        "far better at high noise for small models; epsilon = the official model's)")
    p.add_argument("--init-from", default="", metavar="MODEL_DIR",
                   help="start from this model folder's UNet weights (same architecture), e.g. "
                        "magicboost_core/assets/demo_model to fine-tune the shipped model")
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--ema-decay", type=float, default=0.995, help="EMA decay of the exported weights")
    p.add_argument("--checkpoint-every", type=int, default=250, help="save <out>/checkpoint.pt every N steps")
    p.set_defaults(func=run_train)

    e = subparsers.add_parser("eval-views", help="novel-view PSNR / SSIM on held-out procedural objects vs the "
                                                 "nearest-view baseline")
    e.add_argument("model", help="model folder (config.json + model.safetensors) or a training checkpoint.pt "
                                 "(its EMA weights)")
    e.add_argument("--objects", type=int, default=16, help="held-out objects, one target view each (max 64)")
    e.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    e.add_argument("--cfg", default="1,3", help="CFG scales to evaluate, comma list (default 1,3)")
    e.add_argument("--init", choices=["noise", "nearest_view"], default="noise")
    e.add_argument("--init-strength", type=float, default=0.6, help="SDEdit strength with --init nearest_view")
    e.add_argument("--degraded", action="store_true", help="side anchors from perturbed poses, blurred and noised")
    e.add_argument("--denoise", action="store_true",
                   help="also one-step denoising PSNR at t = 200, 500, 800 and 999 (at 999: the model's mean guess "
                        "of the view from the anchors alone, which a sample from noise scores below)")
    e.add_argument("--seed", type=int, default=2)
    e.add_argument("--cache", default=None, help="data cache folder (default .cache/magicboost)")
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    e.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto (default cpu)")
    e.set_defaults(func=run_eval)

    x = subparsers.add_parser("export-checkpoint", help="save a training checkpoint's (EMA) weights as a model folder")
    x.add_argument("checkpoint", help="checkpoint.pt written by 'magicboost train'")
    x.add_argument("out", help="model folder to write (config.json + model.safetensors); a folder that already holds files is refused")
    x.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA weights")
    x.add_argument("--notes", default="", help="text stored as info.notes in config.json")
    x.add_argument("--half", action="store_true",
                   help="store float16 weights (half the file; loaded back as float32)")
    x.set_defaults(func=run_export)


def _check_train_numbers(args) -> None:
    """Bad numbers and devices fail here, before any data is rendered."""
    from ..validate import finite_number, resolve_device

    finite_number(args.lr, "--lr", lo=0.0, hi=10.0)
    if args.lr <= 0:
        raise ValueError(f"--lr {args.lr}: the learning rate must be > 0 (e.g. 1.5e-3).")
    for name, value, lo in (("--steps", args.steps, 0), ("--batch-size", args.batch_size, 1),
                            ("--objects", args.objects, 1), ("--targets-per-object", args.targets_per_object, 1)):
        finite_number(value, name, lo=lo, hi=10_000_000, integer=True)
    if args.max_minutes is not None:
        finite_number(args.max_minutes, "--max-minutes", lo=0.0, hi=1e7)
    if args.model_channels is not None:
        finite_number(args.model_channels, "--model-channels", lo=32, hi=4096, integer=True)
    finite_number(args.data_workers, "--data-workers", lo=1, hi=256, integer=True)
    resolve_device(args.device)


def _attention_resolutions(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4): downsample factors, powers of two; ValueError naming the option otherwise."""
    from ..validate import number_list

    factors = number_list(text, "--attention-resolutions", lo=1, hi=64)
    if not factors or any(not f.is_integer() or int(f) & (int(f) - 1) for f in factors):
        raise ValueError(f"--attention-resolutions {text!r}: give downsample factors, powers of two such as 1,2,4.")
    return tuple(int(f) for f in factors)


def _check_train_outputs(args, out: Path) -> tuple[Path, bool]:
    """The run folder and the export folder are usable, checked before training.

    Returns (export folder, whether it may be replaced): an explicit ``--export`` must be new or empty; the
    default ``<out>/model`` may be replaced only by ``--resume`` (it is the same run's own earlier export).
    """
    from ..validate import OutputPathError, prepare_output_dir

    prepare_output_dir(out, "--out")
    export = Path(args.export) if args.export else out / "model"
    if export.exists() and not export.is_dir():
        raise OutputPathError(f"--export '{export}' is an existing file; give a new folder.")
    if export.is_dir() and any(export.iterdir()):
        if args.export or not args.resume:
            what = "--export" if args.export else f"the default export folder (--out {out} -> model/)"
            raise OutputPathError(f"{what} '{export}' already holds files (an earlier model?); it is never replaced. "
                                  "Give --export a new folder, or move the old one away.")
        return export, True
    prepare_output_dir(export, "--export")
    return export, False


def run_train(args) -> int:
    from ..model.bundle import default_demo_unet_config
    from .augment import AugmentConfig
    from .dataset import DataConfig, load_data
    from .trainer import TrainConfig, Trainer, read_checkpoint

    _check_train_numbers(args)
    data_cfg = DataConfig(num_objects=args.objects, targets_per_object=args.targets_per_object)
    unet = {} if args.model_channels is None else {"model_channels": args.model_channels}
    if args.attention_resolutions is not None:
        unet["attention_resolutions"] = _attention_resolutions(args.attention_resolutions)
    if args.prediction_type is not None:
        unet["prediction_type"] = args.prediction_type
    default_demo_unet_config(**unet)  # a bad architecture fails here, before the data is rendered
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      augment=AugmentConfig(enabled=not args.no_augment), data=data_cfg, unet=unet,
                      device=args.device, bf16=not args.no_bf16, init_from=args.init_from,
                      warmup_steps=args.warmup_steps, checkpoint_every=args.checkpoint_every,
                      ema_decay=args.ema_decay)
    out = Path(args.out)
    if args.resume and not (out / "checkpoint.pt").exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}; start without --resume.")
    if not args.resume and (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out / 'checkpoint.pt'} exists; pass --resume to continue or choose another --out.")
    export, replace_export = _check_train_outputs(args, out)
    if args.resume:
        read_checkpoint(out / "checkpoint.pt")  # refuse a damaged or unsafe checkpoint before the data is built
    data = load_data(data_cfg, args.cache, workers=args.data_workers)
    trainer = Trainer(cfg, data, out)
    summary = trainer.fit(resume=args.resume, max_seconds=None if args.max_minutes is None else 60 * args.max_minutes)
    trainer.export(export, overwrite=replace_export)
    (out / "log.json").write_text(json.dumps({"summary": summary, "config": cfg.to_dict(),
                                              "history": trainer.history}, indent=1))
    print(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s, final loss {summary['final_loss']:.4f}; "
          f"model saved to {export}")
    return 0


def load_model_or_checkpoint(path: str):
    """``(model, label)`` from a model folder or a training ``checkpoint.pt`` (EMA weights), on the CPU."""
    from ..model import MultiViewModel
    from .trainer import model_from_checkpoint

    p = Path(path)
    if p.is_file() and p.suffix == ".pt":
        model, step = model_from_checkpoint(p)
        return model, f"{p} (EMA, step {step})"
    return MultiViewModel.from_pretrained(str(p)).eval(), str(p)


def run_eval(args) -> int:
    import torch

    from ..validate import number_list, resolve_device
    from .dataset import HELDOUT_FIRST_SEED, DataConfig, load_data
    from .evaluate import denoise_psnr, evaluate

    if not 1 <= args.objects <= 64:
        raise ValueError(f"--objects must be in [1, 64] (the held-out set has 64 objects), got {args.objects}.")
    cfg_scales = number_list(args.cfg, "--cfg", 0.0, 100.0)
    device = resolve_device(args.device)  # before the model loads
    model, label = load_model_or_checkpoint(args.model)
    model = model.to(device)
    test = load_data(DataConfig(num_objects=64, first_seed=HELDOUT_FIRST_SEED, targets_per_object=1,
                                perturbed_anchors=True), args.cache, progress=False)
    strength = args.init_strength if args.init == "nearest_view" else 1.0
    results = {"model": label, "prediction_type": model.unet.config.prediction_type, "objects": args.objects,
               "steps": args.steps, "init": args.init, "strength": strength, "degraded": args.degraded, "by_cfg": {}}
    print(f"{label}: prediction_type {results['prediction_type']}, {args.objects} held-out objects, DDIM "
          f"{args.steps} steps, init {args.init}" + (f" (strength {strength:g})" if args.init != "noise" else ""))
    with torch.no_grad():
        for cfg in cfg_scales:
            r = evaluate(model, test, num=args.objects, steps=args.steps, cfg=cfg, seed=args.seed,
                         degraded=args.degraded, init=args.init, strength=strength)
            results["by_cfg"][str(cfg)] = r
            print(f"  cfg {cfg:g}: PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.3f}   | nearest view: PSNR "
                  f"{r['baseline_psnr']:.2f} dB  SSIM {r['baseline_ssim']:.3f}   | gain {r['psnr'] - r['baseline_psnr']:+.2f} dB")
        if args.denoise:
            results["denoise_psnr"] = {t: denoise_psnr(model, test, t=t, num=args.objects, degraded=args.degraded,
                                                       seed=3) for t in (200, 500, 800, 999)}
            print("  one-step x0 PSNR: " + ", ".join(f"t={t}: {v:.2f}" for t, v in results["denoise_psnr"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def run_export(args) -> int:
    import torch

    from .trainer import export_checkpoint

    out, step = export_checkpoint(args.checkpoint, args.out, use_ema=not args.raw, notes=args.notes,
                                  dtype=torch.float16 if args.half else None)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"exported step {step} ({'raw' if args.raw else 'EMA'} weights) to {out}: {size / 1e6:.1f} MB")
    return 0
