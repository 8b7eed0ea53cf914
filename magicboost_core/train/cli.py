"""``magicboost train``: render procedural data, train the small multi-view model, export it.

Example::

    magicboost train --out runs/demo --steps 3000            # train (CPU by default, CUDA if present)
    magicboost train --out runs/demo --steps 3000 --resume   # continue from runs/demo/checkpoint.pt
    magicboost train --out runs/noaug --no-augment           # ablation arm without augmentations

The exported model (EMA weights, ``MultiViewModel.save_pretrained`` layout) lands in ``<out>/model``
unless ``--export`` names another folder.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

__all__ = ["register", "run_train"]

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
    p.set_defaults(func=run_train)


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
    resolve_device(args.device)


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
    from .augment import AugmentConfig
    from .dataset import DataConfig, load_data
    from .trainer import TrainConfig, Trainer, read_checkpoint

    _check_train_numbers(args)
    data_cfg = DataConfig(num_objects=args.objects, targets_per_object=args.targets_per_object)
    unet = {} if args.model_channels is None else {"model_channels": args.model_channels}
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      augment=AugmentConfig(enabled=not args.no_augment), data=data_cfg, unet=unet,
                      device=args.device, bf16=not args.no_bf16)
    out = Path(args.out)
    if args.resume and not (out / "checkpoint.pt").exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}; start without --resume.")
    if not args.resume and (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out / 'checkpoint.pt'} exists; pass --resume to continue or choose another --out.")
    export, replace_export = _check_train_outputs(args, out)
    if args.resume:
        read_checkpoint(out / "checkpoint.pt")  # refuse a damaged or unsafe checkpoint before the data is built
    data = load_data(data_cfg, args.cache)
    trainer = Trainer(cfg, data, out)
    summary = trainer.fit(resume=args.resume, max_seconds=None if args.max_minutes is None else 60 * args.max_minutes)
    trainer.export(export, overwrite=replace_export)
    (out / "log.json").write_text(json.dumps({"summary": summary, "config": cfg.to_dict(),
                                              "history": trainer.history}, indent=1))
    print(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s, final loss {summary['final_loss']:.4f}; "
          f"model saved to {export}")
    return 0
