"""``magicboost demo`` (what ``make demo`` runs): refine the shipped sample asset with the demo model."""
from __future__ import annotations

import sys

__all__ = ["register"]


def _cmd_demo(args) -> int:
    from ..model.bundle import DemoModelMissingError
    from ..refine.cli import device_from_args
    from .run import run_demo

    try:
        metrics = run_demo(args.out, steps=args.steps, device=device_from_args(args))
    except DemoModelMissingError as e:
        print(f"magicboost demo: the demo model is not available: {e}", file=sys.stderr)
        return 2
    if metrics.get("interrupted"):
        print(f"magicboost demo: interrupted; saved the best state so far to {args.out}/", file=sys.stderr)
        return 130
    return 0


def register(subparsers) -> None:
    """Add ``demo`` to the ``magicboost`` command line."""
    from ..refine.cli import parse_steps

    d = subparsers.add_parser("demo", help="refine the shipped sample asset end to end with the demo model")
    d.add_argument("--out", default="output", help="output folder (default: output/)")
    d.add_argument("--steps", type=parse_steps, default=None, help="refinement steps (default: the demo profile's 200)")
    d.add_argument("--device", default=None, help="torch device (default: cpu)")
    d.set_defaults(func=_cmd_demo)
