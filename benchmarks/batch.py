"""Batch throughput: the same small assets refined sequentially (1 worker process) and on N workers.

    python benchmarks/batch.py [--assets 8] [--steps 20] [--resolution 64] [--workers 1 2] [--ray]

Writes ``--assets`` example assets (``magicboost_core.demo.batch_examples``: procedural shapes, their coarse
copies, four 32 px Instant3D views, ground truth), then runs ``run_batch`` once per worker count
(``--ray``: also once on a private local Ray instance with as many CPUs as the largest worker count).
Wall time includes starting the workers and loading the model in each (what a user waits for).
Every run uses one torch thread per worker, so the meshes must be identical across runs (checked).
Prints a Markdown table for BENCHMARKS.md with the machine's load average before and after.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magicboost_core.batch import BatchJob, run_batch  # noqa: E402
from magicboost_core.demo.batch_examples import write_example_assets  # noqa: E402


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished (joined) worker processes."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run(manifest: Path, out: Path, job: BatchJob, **kw) -> dict:
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu_seconds()
    rows = run_batch(manifest, out, job, force=True, progress=False, **kw)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"benchmark: assets did not finish: {bad}")
    meshes = {r["id"]: (out / r["mesh"]).read_bytes() for r in rows}
    return {"wall": wall, "cpu": cpu if "ray_address" not in kw else None, "meshes": meshes,
            "per_asset": statistics.median(float(r["seconds"]) for r in rows),
            "load_before": load, "load_after": os.getloadavg()[0], "n": len(rows)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assets", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--resolution", type=int, default=64, help="render resolution of the refinement")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--ray", action="store_true", help="also run on a private local Ray instance")
    args = p.parse_args(argv)
    config = {"steps": args.steps, "render_resolution": args.resolution, "texture_resolution": 128}
    job = BatchJob(eval_resolution=64, eval_points=5000, threads=1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="magicboost-batch-bench-") as tmp:
        manifest = write_example_assets(Path(tmp) / "assets", count=args.assets, resolution=32, config=config)
        for w in args.workers:
            name = f"local, {w} worker{'s' if w > 1 else ''}" if w else "in-process (--workers 0)"
            results[name] = _run(manifest, Path(tmp) / f"w{w}", job, workers=w)
            print(f"{name}: {results[name]['wall']:.1f} s", flush=True)
        if args.ray:
            import ray

            root = str(Path(__file__).resolve().parents[1])  # workers import this checkout
            ray.init(num_cpus=max(args.workers), include_dashboard=False, logging_level="ERROR",
                     runtime_env={"env_vars": {"PYTHONPATH": root, "OMP_NUM_THREADS": "1"}})
            results[f"Ray, {max(args.workers)} CPUs"] = _run(manifest, Path(tmp) / "ray", job, ray_address="auto")
            ray.shutdown()
    base = results[next(iter(results))]
    same = all(r["meshes"] == base["meshes"] for r in results.values())
    print(f"\n{args.assets} assets, {args.steps} steps at {args.resolution} px (demo model), {os.cpu_count()} CPUs, "
          f"one torch thread per worker; meshes identical across runs: {same}\n")
    print("| run | wall s | assets / min | throughput vs first row | median s per asset | CPU s (all processes) "
          "| load avg before -> after |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cpu = f"{r['cpu']:.0f}" if r["cpu"] is not None else "n/a"
        print(f"| {name} | {r['wall']:.1f} | {60 * r['n'] / r['wall']:.2f} | {base['wall'] / r['wall']:.2f}x | "
              f"{r['per_asset']:.1f} | {cpu} | {r['load_before']:.1f} -> {r['load_after']:.1f} |")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
