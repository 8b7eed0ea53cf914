"""``magicboost batch MANIFEST --out DIR``: refine many assets on local worker processes or Ray."""
from __future__ import annotations

import os
import sys

from .manifest import parse_value, set_dotted

__all__ = ["register", "parse_overrides"]


def parse_overrides(items: list[str]) -> dict:
    """``["steps=500", "aiu.enabled=false"]`` -> ``{"steps": 500, "aiu": {"enabled": False}}``."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. --set steps=500 or --set aiu.enabled=false.")
        set_dotted(out, key.strip(), parse_value(value.strip()))
    return out


def _job(args):
    from .asset import BatchJob

    threads = getattr(args, "threads", None)
    if threads is None:  # as `magicboost --threads`: $OMP_NUM_THREADS, else 1
        threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    return BatchJob(model=args.model, device=args.device, threads=max(1, threads),
                    eval_resolution=args.eval_resolution, eval_points=args.eval_points)


def _cmd_batch(args) -> int:
    from .outputs import write_summary
    from .runner import plan_manifest, run_batch

    job = _job(args)
    overrides = parse_overrides(args.set)
    if args.check:
        specs, rows = plan_manifest(args.manifest, args.out, job, overrides, args.force)
        for spec in specs:
            state = rows[spec.row]["status"] if spec.row in rows else "to run"
            print(f"{spec.id}: {state}" + (f" - {spec.error}" if spec.error else f" (config {spec.config_hash})"))
        return 1 if any(s.error for s in specs) else 0
    try:
        rows = run_batch(args.manifest, args.out, job, overrides, workers=args.workers, ray_address=args.ray,
                         num_cpus=args.cpus_per_asset, num_gpus=args.gpus_per_asset, max_retries=args.max_retries,
                         force=args.force, progress=not args.no_progress)
    except ImportError as e:
        print(f"magicboost batch: {e}", file=sys.stderr)
        return 2
    csv_path, md_path = write_summary(args.out, rows)
    print(md_path.read_text(), end="")
    print(f"summary: {csv_path}, {md_path}")
    bad = [r for r in rows if r["status"] not in ("ok", "skipped")]
    if bad:
        print(f"magicboost batch: {len(bad)} of {len(rows)} assets did not finish; see the error column.",
              file=sys.stderr)
    return 1 if bad else 0


def register(subparsers) -> None:
    """Add ``batch`` to the ``magicboost`` command line."""
    b = subparsers.add_parser(
        "batch", help="refine many assets from a CSV/JSONL manifest (local worker processes or a Ray cluster)",
        description="Refine every asset of MANIFEST (CSV or JSONL: mesh, views, preset, ground_truth, config "
                    "overrides) into OUT/<id>/. Finished assets with the same config hash are skipped (resume); "
                    "OUT/summary.csv and summary.md list status, time and metrics.")
    b.add_argument("manifest", help="CSV (header row) or JSONL manifest; see magicboost_core/batch/manifest.py")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--workers", type=int, default=1, help="local worker processes (default 1; 0 = this process)")
    b.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run one Ray task per asset: no ADDRESS = a local Ray instance, 'auto' = the cluster of "
                        "`ray start --head`, or HOST:PORT / ray://HOST:10001 (needs pip install 'magicboost[ray]')")
    b.add_argument("--gpus-per-asset", type=float, default=0.0,
                   help="Ray: GPUs per task, fractions allowed (default 0)")
    b.add_argument("--cpus-per-asset", type=float, default=1.0, help="Ray: CPUs per task (default 1)")
    b.add_argument("--max-retries", type=int, default=2, help="re-runs of an asset whose worker died (default 2)")
    b.add_argument("--model", default=None, help="converted Magic-Boost model folder (default: the demo model)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="RefineConfig setting for every asset, e.g. --set steps=500 --set aiu.enabled=false "
                        "(a manifest row's own config wins)")
    b.add_argument("--device", default="auto", help="torch device of the workers (default: cuda if visible, else cpu)")
    b.add_argument("--eval-resolution", type=int, default=128, help="render size of the ground-truth metrics")
    b.add_argument("--eval-points", type=int, default=20000, help="surface samples of Chamfer / normal consistency")
    b.add_argument("--force", action="store_true", help="re-run assets that are already done")
    b.add_argument("--check", action="store_true", help="only read and check the manifest; print what would run")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_batch)
