"""Command-line entry point: ``magicboost <command>`` (also ``python -m magicboost_core.cli``).

Each engine room contributes its own subcommands through a ``register(subparsers)`` function, so
this file only assembles them:

* ``demo``     — refine the shipped sample asset end to end with the demo model (``demo.cli``)
* ``refine``   — refine your own mesh from its multi-view images (``refine.cli``)
* ``convert``  — convert the official checkpoint to safetensors (``model.cli``)
* ``sample``   — novel-view sampling (``model.cli``)
* ``train``    — train a small multi-view model (``train.cli``)
* ``batch``    — refine many assets from a manifest, local worker processes or Ray (``batch.cli``)

The headless workflow runner is part of the node pack, not of the engine: ``python -m nodes.runner``
(from the repository root). It shares :func:`add_common_options` and :func:`run_command` with this CLI.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import torch

from .batch import cli as batch_cli
from .demo import cli as demo_cli
from .model import cli as model_cli
from .refine import cli as refine_cli
from .train import cli as train_cli
from .validate import threads_from_env

_COMMAND_MODULES = (demo_cli, refine_cli, model_cli, train_cli, batch_cli)


def add_common_options(p: argparse.ArgumentParser) -> None:
    """``-v`` and ``--threads``, which :func:`run_command` applies."""
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: $OMP_NUM_THREADS, else 1: the demo model's small tensors "
                        "run fastest on one thread and do not stall on a busy machine; raise it for the full-size "
                        "model on a CPU)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magicboost", description="Magic-Boost: refine coarse 3D assets.")
    add_common_options(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.register(sub)
    return p


def main(argv=None) -> int:
    """Run one command; returns the exit code (see :func:`run_command`)."""
    args = build_parser().parse_args(argv)
    return run_command(args, f"magicboost {args.command}")


def run_command(args, name: str) -> int:
    """Run ``args.func(args)`` with the logging and torch threads of :func:`add_common_options`; returns the
    exit code: 0 done, 2 bad input (a one-line message ``<name>: error: ...`` naming the input and the fix,
    no traceback; ``-v`` adds it), 130 interrupted."""
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
        print(f"{name}: error: {_describe(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{name}: error: out of memory; use smaller inputs (fewer or smaller views, a lower resolution) or a "
              "machine with more memory.", file=sys.stderr)
        return 2


def _describe(e: BaseException) -> str:
    """One line for an error: our ValueErrors carry their message; OS errors get the path and the reason."""
    if isinstance(e, OSError) and e.strerror:
        where = f" '{e.filename}'" if e.filename else ""
        return f"{e.strerror}{where}; check the path and its permissions."
    return str(e) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
