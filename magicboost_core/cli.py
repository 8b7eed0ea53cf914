"""Command-line entry point: ``magicboost <command>`` (also ``python -m magicboost_core.cli``).

Each engine room contributes its own subcommands through a ``register(subparsers)`` function, so
this file only assembles them:

* ``demo``     — refine the shipped sample asset end to end with the demo model (``refine.demo``)
* ``refine``   — refine your own mesh from its multi-view images (``refine.demo``)
* ``convert``  — convert the official checkpoint to safetensors (``model.cli``)
* ``sample``   — novel-view sampling (``model.cli``)
* ``train``    — train a small multi-view model (``train.cli``)
* ``run``      — execute an API-format ComfyUI workflow of this pack without ComfyUI (``runner``)
* ``batch``    — refine many assets from a manifest, local worker processes or Ray (``batch.cli``)
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import torch

_COMMAND_MODULES = (
    "magicboost_core.refine.demo",
    "magicboost_core.model.cli",
    "magicboost_core.train.cli",
    "magicboost_core.runner",
    "magicboost_core.batch.cli",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magicboost", description="Magic-Boost: refine coarse 3D assets.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: $OMP_NUM_THREADS, else 1: the demo model's small tensors "
                        "run fastest on one thread and do not stall on a busy machine; raise it for the full-size "
                        "model on a CPU)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a room not built yet: its commands are absent, nothing else breaks
            if e.name != name:
                raise
            continue
        module.register(sub)
    if "demo" not in sub.choices:
        d = sub.add_parser("demo", help="refine the shipped sample asset (not available in this build)")
        d.add_argument("--out", default="output")
        d.set_defaults(func=_missing_demo)
    return p


def _missing_demo(args) -> int:
    print("magicboost demo: the refinement pipeline is not part of this build yet; nothing was produced.",
          file=sys.stderr)
    return 2


def main(argv=None) -> int:
    """Run one command; returns the exit code: 0 done, 2 bad input (a one-line message naming the input and
    the fix, no traceback; ``-v`` adds it), 130 interrupted."""
    from .validate import threads_from_env

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads {args.threads}: give at least 1.")
        threads = args.threads if args.threads is not None else threads_from_env(os.environ.get("OMP_NUM_THREADS"))
        torch.set_num_threads(threads)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # every bad-input error of the engine is a ValueError subclass
        if args.verbose:
            logging.exception("details")
        print(f"magicboost {args.command}: error: {_describe(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"magicboost {args.command}: error: out of memory; use smaller inputs (fewer or smaller views, a "
              "lower resolution) or a machine with more memory.", file=sys.stderr)
        return 2


def _describe(e: BaseException) -> str:
    """One line for an error: our ValueErrors carry their message; OS errors get the path and the reason."""
    if isinstance(e, OSError) and e.strerror:
        where = f" '{e.filename}'" if e.filename else ""
        return f"{e.strerror}{where}; check the path and its permissions."
    return str(e) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
