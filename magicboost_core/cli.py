"""Command-line entry point: ``magicboost <command>`` (also ``python -m magicboost_core.cli``)."""
from __future__ import annotations

import argparse
import sys


def _cmd_demo(args) -> int:
    print("magicboost demo: the refinement pipeline is not implemented yet; nothing was produced.", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magicboost", description="Magic-Boost: refine coarse 3D assets.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="refine the shipped sample asset end to end with the demo model")
    d.add_argument("--out", default="output", help="output folder (default: output/)")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
