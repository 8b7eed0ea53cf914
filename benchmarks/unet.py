"""Benchmark of the full-size multi-view UNet (random weights): forward time and peak memory.

Setting (the refinement's SDS step): batch 4 renders with classifier-free guidance = 8 UNet batch rows,
1 target + A anchors each (default A = 4), latents 4x32x32 (256 px images), 77 text tokens, 257 CLIP tokens.

Modes:
  full      one forward over all B*F = 8*5 = 40 rows (no cache)
  encode    encode_anchors: the 8*4 = 32 anchor rows once (done once per anchor set)
  cached    forward with the AnchorCache: only the 8 target rows (the per-step cost of SDS / sampling)

Devices: fp32 on CPU; on CUDA (when available) bf16 and fp16 (and fp32 unless --cuda-dtypes says otherwise).
Peak memory: CUDA = torch.cuda.max_memory_allocated per mode (weights included); CPU = process peak RSS
after the mode (monotonic: modes run in the order encode, cached, full, so each line bounds that mode).

Usage:  PYTHONPATH=. python benchmarks/unet.py [--device cpu|cuda|all] [--repeats N] [--anchors A] [--parity]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import torch

from magicboost_core.model.config import MultiViewUNetConfig
from magicboost_core.model.unet import MultiViewUNet


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _inputs(cfg, rows, anchors, latent, device, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    nf = anchors + 1

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    labels = torch.zeros(rows, nf, 2)
    labels[: rows // 2, 2:] = torch.tensor([500.0, 0.5])  # conditional half: side anchors labelled
    return dict(sample=rnd(rows, cfg.in_channels, latent, latent), timestep=torch.full((rows,), 500, device=device),
                anchors=rnd(rows, anchors, cfg.in_channels, latent, latent), text=rnd(rows, 77, cfg.context_dim),
                image_tokens=rnd(rows, 257, cfg.ip_in_dim), camera=rnd(rows, nf, cfg.camera_dim),
                labels=labels.to(device=device, dtype=dtype))


def timed(fn, device: torch.device, repeats: int, warmup: int = 0):
    """(median seconds of ``repeats`` synchronised calls of ``fn``, its last output), after ``warmup`` calls.
    Also used by ``benchmarks/gpu_check.py``."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench(device: torch.device, dtype: torch.dtype, rows: int, anchors: int, latent: int, repeats: int, warmup: int,
          skip_full: bool = False):
    cfg = MultiViewUNetConfig.full()
    t0 = time.perf_counter()
    with torch.device(device):
        model = MultiViewUNet(cfg)
    model = model.to(dtype).eval().requires_grad_(False)
    build_s = time.perf_counter() - t0
    inp = _inputs(cfg, rows, anchors, latent, device, dtype)
    cond = {k: inp[k] for k in ("text", "image_tokens", "camera", "labels")}
    results = []
    nf = anchors + 1
    with torch.inference_mode():
        for _ in range(warmup):
            cache = model.encode_anchors(inp["anchors"], **cond)
            model(inp["sample"], inp["timestep"], None, **cond, anchor_cache=cache)
            if not skip_full:
                model(**inp)
            del cache
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t_enc, cache = timed(lambda: model.encode_anchors(inp["anchors"], **cond), device, repeats)
        results.append(("encode", rows * anchors, t_enc, _peak_mb(device)))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t_cached, eps_cached = timed(lambda: model(inp["sample"], inp["timestep"], None, **cond, anchor_cache=cache),
                                     device, repeats)
        results.append(("cached", rows, t_cached, _peak_mb(device)))
        results.append(("cache size", 0, 0.0, cache.nbytes / 2**20))
        if not skip_full:
            del cache
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            t_full, eps_full = timed(lambda: model(**inp), device, repeats)
            results.append(("full", rows * nf, t_full, _peak_mb(device)))
            diff = (eps_full.float() - eps_cached.float()).abs().max().item()
            results.append(("|eps|max", 0, eps_full.float().abs().max().item(), 0.0))
            results.append(("|full-cached|max", 0, diff, 0.0))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return build_s, results


def parity(device: torch.device) -> None:
    """Official tiny fixture on ``device`` in fp32 (TF32 off) and bf16/fp16: max abs error of frame outputs."""
    import json
    import os
    import pathlib

    from safetensors.torch import load_file

    from magicboost_core.model.convert_unet import convert_official_unet

    root = pathlib.Path(__file__).resolve().parents[1]
    bases = [pathlib.Path(os.environ["MAGICBOOST_SHARED"])] if os.environ.get("MAGICBOOST_SHARED") else []
    for base in bases + [root / "shared", root.parent / "shared"]:
        fixture = base / "fixtures" / "official-unet-tiny"
        if fixture.exists():
            break
    else:
        print("parity: fixture official-unet-tiny not found, skipped")
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    kwargs = json.loads((fixture / "config.json").read_text())["constructor_kwargs"]
    model = MultiViewUNet(MultiViewUNetConfig.from_official_kwargs(kwargs))
    model.load_state_dict(convert_official_unet(load_file(fixture / "weights.safetensors")))
    inputs = load_file(fixture / "inputs.safetensors")
    ref = load_file(fixture / "outputs.safetensors")["out"]
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        m = model.to(device=device, dtype=dtype).eval()
        i = {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
        with torch.no_grad():
            out = m.forward_frames(i["x"], i["timesteps"], i["context"], i["camera"], i["ip"], i["ext_ip_img"],
                                   i["noise_embed"])
        err = (out.float().cpu() - ref).abs().max().item()
        print(f"parity {device.type} {str(dtype).replace('torch.', ''):9s} max|out - official| = {err:.3g} "
              f"(output max {ref.abs().max().item():.2f})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    ap.add_argument("--batch", type=int, default=4, help="renders per SDS step (CFG doubles the rows)")
    ap.add_argument("--anchors", type=int, default=4)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per mode (default: cpu 1, cuda 10)")
    ap.add_argument("--cuda-dtypes", default="bfloat16,float16,float32")
    ap.add_argument("--skip-full-cpu", action="store_true", help="CPU: time encode + cached only")
    ap.add_argument("--parity", action="store_true", help="also run the tiny official fixture on each device")
    args = ap.parse_args(argv)

    rows = 2 * args.batch
    runs = []
    if args.device in ("cpu", "all"):
        runs.append((torch.device("cpu"), torch.float32))
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available():
            runs += [(torch.device("cuda"), getattr(torch, d)) for d in args.cuda_dtypes.split(",") if d]
        elif args.device == "cuda":
            sys.exit("benchmarks/unet.py: CUDA requested but not available")
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, "
          f"GPU {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    print(f"setting: {args.batch} renders x CFG = {rows} rows, 1 target + {args.anchors} anchors, "
          f"latent 4x{args.latent}x{args.latent}, text 77x1024, CLIP 257x1280, random weights")
    header = f"{'device':6s} {'dtype':9s} {'mode':17s} {'UNet rows':>9s} {'time s':>9s} {'peak MiB':>9s}"
    lines = []
    print(header, flush=True)

    def emit(line):
        lines.append(line)
        print(line, flush=True)

    for device, dtype in runs:
        if args.parity:
            parity(device)
        repeats = args.repeats or (1 if device.type == "cpu" else 10)
        warmup = 0 if device.type == "cpu" else 2
        build_s, results = bench(device, dtype, rows, args.anchors, args.latent, repeats, warmup,
                                 skip_full=device.type == "cpu" and args.skip_full_cpu)
        name = str(dtype).replace("torch.", "")
        emit(f"{device.type:6s} {name:9s} {'build model':17s} {'':>9s} {build_s:9.2f} {'':>9s}")
        for mode, n_rows, t, mem in results:
            if mode == "cache size":
                emit(f"{device.type:6s} {name:9s} {mode:17s} {'':>9s} {'':>9s} {mem:9.0f}")
            elif mode.startswith("|"):
                emit(f"{device.type:6s} {name:9s} {mode:17s} {'':>9s} {t:9.2e} {'':>9s}")
            else:
                emit(f"{device.type:6s} {name:9s} {mode:17s} {n_rows:9d} {t:9.3f} {mem:9.0f}")
    return lines


if __name__ == "__main__":
    main()
