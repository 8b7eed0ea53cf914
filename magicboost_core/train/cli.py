"""``magicboost train``: render procedural data, train the small multi-view model, export it.

Example::

    magicboost train --out runs/demo --steps 3000            # train (CPU by default, CUDA if present)
    magicboost train --out runs/demo --steps 3000 --resume   # continue from runs/demo/checkpoint.pt
    magicboost train --out runs/noaug --no-augment           # ablation arm without augmentations
    magicboost train --out runs/v --prediction-type v_prediction \
        --init-from magicboost_core/assets/demo_model            # fine-tune the shipped eps model to v

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
    p.add_argument("--export", default=None, help="where to save the final model (default <out>/model)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop early after this much wall time")
    p.add_argument("--model-channels", type=int, default=None, help="UNet width override")
    p.add_argument("--prediction-type", default="epsilon", choices=["epsilon", "v_prediction", "sample"],
                   help="what the UNet learns to output (default epsilon = official; v_prediction samples far "
                        "better at high noise for small models)")
    p.add_argument("--init-from", default="", metavar="MODEL_DIR",
                   help="start from this model folder's UNet weights (same architecture), e.g. "
                        "magicboost_core/assets/demo_model to fine-tune the shipped model")
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--ema-decay", type=float, default=0.995, help="EMA decay of the exported weights")
    p.add_argument("--checkpoint-every", type=int, default=250, help="save <out>/checkpoint.pt every N steps")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from .augment import AugmentConfig
    from .dataset import DataConfig, load_data
    from .trainer import TrainConfig, Trainer

    data_cfg = DataConfig(num_objects=args.objects, targets_per_object=args.targets_per_object)
    unet = {} if args.model_channels is None else {"model_channels": args.model_channels}
    if args.prediction_type != "epsilon":
        unet["prediction_type"] = args.prediction_type
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
    data = load_data(data_cfg, args.cache)
    trainer = Trainer(cfg, data, out)
    summary = trainer.fit(resume=args.resume, max_seconds=None if args.max_minutes is None else 60 * args.max_minutes)
    export = Path(args.export) if args.export else out / "model"
    trainer.export(export)
    (out / "log.json").write_text(json.dumps({"summary": summary, "config": cfg.to_dict(),
                                              "history": trainer.history}, indent=1))
    print(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s, final loss {summary['final_loss']:.4f}; "
          f"model saved to {export}")
    return 0
