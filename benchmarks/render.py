"""Renderer benchmark: 4 views x 256 x 256, shaded vertex-coloured sphere, 10k / 50k / 200k faces.

For every available (backend, device) it times ``render(...)`` forward, and forward + backward (loss on
rgb and alpha, gradients into vertices and vertex colours), as the median of ``--repeats`` runs after
one warm-up (wall clock; ``fwd+bwd cpu s`` is the process CPU time of the same runs, summed over
threads, which is less sensitive to other load on a shared machine). Each configuration runs in its
own subprocess so that peak memory is clean:

* CPU: peak resident set size (``resource.getrusage(...).ru_maxrss``) minus the resident size just
  before the first render, i.e. the extra memory the renderer needed at its peak;
* CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the first render.

Usage: ``python benchmarks/render.py [--faces 10000 50000 200000] [--threads N] [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sphere(faces: int):
    """Latitude-longitude sphere with about ``faces`` triangles (2 * cols * (rows - 1), cols ~ 2 * rows)."""
    import math

    import torch

    rows = max(2, round(math.sqrt(faces / 4)) + 1)
    cols = max(3, round(faces / (2 * (rows - 1))))
    th = torch.linspace(0, math.pi, rows + 1)[1:-1]
    ph = torch.arange(cols) * (2 * math.pi / cols)
    ring = torch.stack([th.sin()[:, None] * ph.cos(), th.sin()[:, None] * ph.sin(),
                        th.cos()[:, None].expand(-1, cols)], -1).reshape(-1, 3)
    verts = torch.cat([torch.tensor([[0.0, 0.0, 1.0]]), ring, torch.tensor([[0.0, 0.0, -1.0]])]) * 0.5
    n_ring, south = ring.shape[0], ring.shape[0] + 1
    f = []
    j = torch.arange(cols)
    jn = (j + 1) % cols
    f.append(torch.stack([torch.zeros(cols, dtype=torch.long), 1 + j, 1 + jn], 1))
    for i in range(rows - 2):
        a, b = 1 + i * cols + j, 1 + i * cols + jn
        c, d = a + cols, b + cols
        f += [torch.stack([a, c, d], 1), torch.stack([a, d, b], 1)]
    last = 1 + (rows - 2) * cols
    f.append(torch.stack([last + j, torch.full((cols,), south), last + jn], 1))
    assert n_ring + 2 == verts.shape[0]
    return verts, torch.cat(f)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(backend: str, device: str, faces: int, repeats: int, threads: int) -> dict:
    import torch

    sys.path.insert(0, REPO)
    from magicboost_core.geometry import Mesh, orbit_cameras
    from magicboost_core.render import render

    torch.set_num_threads(threads)
    v, f = sphere(faces)
    mesh = Mesh(v, f, vertex_colors=v / 0.5 * 0.5 + 0.5).to(device)
    cams = orbit_cameras([0, 15, 30, -15], [0, 90, 180, 270], 2.0, width=256).to(device)
    verts = mesh.vertices.clone().requires_grad_(True)
    cols = mesh.vertex_colors.clone().requires_grad_(True)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        return render(mesh, cams, mode="shaded", vertices=verts, vertex_colors=cols, backend=backend)

    def fwd_bwd():
        out = forward()
        (out.rgb.mean() + out.alpha.mean()).backward()
        verts.grad = cols.grad = None

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    fwd_bwd()  # warm-up (caches, allocator)
    times = {}
    for name, fn in (("forward", forward), ("forward_backward", fwd_bwd)):
        ts, cpu = [], []
        for _ in range(repeats):
            sync()
            t, c = time.perf_counter(), time.process_time()
            fn()
            sync()
            ts.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        times[name] = statistics.median(ts)
        times[name + "_cpu"] = statistics.median(cpu)
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"backend": backend, "device": device, "faces": int(f.shape[0]), **times, "peak_mb": peak}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--one", nargs=3, metavar=("BACKEND", "DEVICE", "FACES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]), args.repeats, args.threads)))
        return

    import torch

    sys.path.insert(0, REPO)
    from magicboost_core.render import nvdiffrast_available

    configs = [("torch", "cpu")]
    if torch.cuda.is_available():
        configs.append(("torch", "cuda"))
        if nvdiffrast_available():
            configs.append(("nvdiffrast", "cuda"))
    gpu = f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"# machine: {_cpu_name()}, {os.cpu_count()} CPU cores, torch threads {args.threads}{gpu}")
    print("# render(mode='shaded', antialias=True), 4 views x 256 x 256, median of "
          f"{args.repeats}; peak MB = max RSS above baseline (CPU) / max_memory_allocated (CUDA)")
    print(f"{'backend':<12}{'device':<8}{'faces':>9}{'forward s':>12}{'fwd+bwd s':>12}{'fwd+bwd cpu s':>15}"
          f"{'peak MB':>10}")
    for backend, device in configs:
        for faces in args.faces:
            cmd = [sys.executable, os.path.abspath(__file__), "--one", backend, device, str(faces),
                   "--repeats", str(args.repeats), "--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"{backend:<12}{device:<8}{faces:>9}  failed: {res.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{r['backend']:<12}{r['device']:<8}{r['faces']:>9}{r['forward']:>12.3f}"
                  f"{r['forward_backward']:>12.3f}{r['forward_backward_cpu']:>15.3f}{r['peak_mb']:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
