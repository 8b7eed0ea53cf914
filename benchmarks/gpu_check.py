"""``make gpu-check``: one command that checks a GPU machine end to end and writes a Markdown table.

On a CUDA machine (budget about 8 minutes):

1. **nvdiffrast parity**: the renderer parity tests (``tests/test_render_backend.py``, ``tests/test_render_common.py``)
   in a pytest subprocess.
2. **UNet precision**: the full-size UNet (random weights) at 256 px (latents 4x32x32), the SDS step of the
   refinement: batch 4 with CFG (8 rows), 1 target + 4 anchors. For fp32, fp16/bf16 autocast over fp32
   weights (official: Lightning 16-mixed) and fp16/bf16 weights: time of the uncached forward (all 5 frames)
   and of the cached step (``anchor_infer_once``: target rows only), and the max / relative error of the CFG
   noise prediction against fp32.
3. **Full-size refinement**: an official-layout state dict with random weights (UNet ``model.diffusion_model.*``,
   ``vae_model.*``, OpenCLIP ``clip_model.model.*`` text and visual towers, the 12 schedule buffers) is written
   to disk, converted by ``magicboost convert`` (the command line) and refined for 100 steps at 256 px,
   batch 4 (AIU included): s/step, peak VRAM and the extrapolation to the official 2500 steps.
4. **Rasterizer**: the pure-PyTorch rasterizer vs nvdiffrast, 50k faces, 4 x 256², forward and forward+backward.

Without CUDA it says so and runs the CPU parts at tiny sizes (UNet cache parity, the conversion + a 2-step
refinement with a tiny official-layout checkpoint, the torch rasterizer at 2k faces); ``tests/test_gpu_check.py``
runs that inside ``make test``.

Usage: ``python benchmarks/gpu_check.py [--out gpu_check.md] [--cpu] [--refine-steps 100]``
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magicboost_core.model.codec import SDVAECodec, SDVAEConfig, vae_diffusers_to_ldm  # noqa: E402
from magicboost_core.model.config import MultiViewUNetConfig  # noqa: E402
from magicboost_core.model.convert_unet import official_unet_key_map  # noqa: E402
from magicboost_core.model.schedule import official_schedule_buffers  # noqa: E402
from magicboost_core.model.unet import MultiViewUNet  # noqa: E402
from benchmarks.unet import sync, timed  # noqa: E402


@dataclass
class Sizes:
    """What one run measures: full size on CUDA, tiny on the CPU."""

    unet: MultiViewUNetConfig
    vae: SDVAEConfig
    text_width: int
    text_layers: int
    vocab: int
    visual_width: int
    visual_layers: int
    visual_mlp: int
    patch: int
    visual_image: int
    head_channels: int
    render_px: int
    batch: int
    faces: int
    repeats: int
    latent: int

    @classmethod
    def full(cls) -> "Sizes":
        return cls(MultiViewUNetConfig.full(), SDVAEConfig(), 1024, 24, 49408, 1280, 32, 5120, 14, 224, 64, 256, 4,
                   50_000, 5, 32)

    @classmethod
    def tiny(cls) -> "Sizes":
        return cls(MultiViewUNetConfig.tiny(), SDVAEConfig.tiny(), 32, 3, 600, 1280, 2, 64, 8, 16, 16, 32, 1, 2_000,
                   1, 8)


# ------------------------------------------------------------------------------------------------ helpers
class _Filler:
    """Tensor makers for the random checkpoint: seeded normals on the CPU, or shapes only on ``meta``."""

    def __init__(self, seed: int, meta: bool):
        self.g = torch.Generator().manual_seed(seed)
        self.meta = meta

    def normal(self, *shape, std: float = 0.02) -> torch.Tensor:
        if self.meta:
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=self.g) * std

    def ones(self, *shape) -> torch.Tensor:
        return torch.ones(*shape, device="meta" if self.meta else "cpu")

    def zeros(self, *shape) -> torch.Tensor:
        return torch.zeros(*shape, device="meta" if self.meta else "cpu")


def _openclip_block(prefix: str, width: int, mlp: int, f: _Filler) -> dict:
    return {prefix + "ln_1.weight": f.ones(width), prefix + "ln_1.bias": f.zeros(width),
            prefix + "attn.in_proj_weight": f.normal(3 * width, width), prefix + "attn.in_proj_bias": f.zeros(3 * width),
            prefix + "attn.out_proj.weight": f.normal(width, width), prefix + "attn.out_proj.bias": f.zeros(width),
            prefix + "ln_2.weight": f.ones(width), prefix + "ln_2.bias": f.zeros(width),
            prefix + "mlp.c_fc.weight": f.normal(mlp, width), prefix + "mlp.c_fc.bias": f.zeros(mlp),
            prefix + "mlp.c_proj.weight": f.normal(width, mlp), prefix + "mlp.c_proj.bias": f.zeros(width)}


def official_layout_state_dict(sizes: Sizes, seed: int = 0, dtype=torch.float16, meta: bool = False) -> dict:
    """Random weights named as the official ``LatentDiffusionInterface.state_dict()`` (reference §3): the UNet
    (``model.diffusion_model.``), the VAE (``vae_model.``, LDM names), OpenCLIP text and visual towers
    (``clip_model.model.``) and the 12 schedule buffers. ``meta``: shapes only (no memory), for key checks."""
    f = _Filler(seed, meta)
    torch.manual_seed(seed)
    with torch.device("meta" if meta else "cpu"):
        unet = MultiViewUNet(sizes.unet).state_dict()
        vae = vae_diffusers_to_ldm(SDVAECodec(sizes.vae).vae.state_dict())
    ours_to_official = {v: k for k, v in official_unet_key_map(sizes.unet).items()}
    sd = {"model.diffusion_model." + ours_to_official[k]: v for k, v in unet.items()}
    del unet
    sd.update({"vae_model." + k: v for k, v in vae.items()})
    t, w = "clip_model.model.", sizes.text_width
    sd.update({t + "token_embedding.weight": f.normal(sizes.vocab, w), t + "positional_embedding": f.normal(77, w),
               t + "ln_final.weight": f.ones(w), t + "ln_final.bias": f.zeros(w),
               t + "text_projection": f.normal(w, w), t + "logit_scale": f.ones(())})
    for i in range(sizes.text_layers):
        sd.update(_openclip_block(f"{t}transformer.resblocks.{i}.", w, 4 * w, f))
    v, vw = t + "visual.", sizes.visual_width
    n_pos = (sizes.visual_image // sizes.patch) ** 2 + 1
    sd.update({v + "conv1.weight": f.normal(vw, 3, sizes.patch, sizes.patch), v + "class_embedding": f.normal(vw),
               v + "positional_embedding": f.normal(n_pos, vw, std=0.01),
               v + "ln_pre.weight": f.ones(vw), v + "ln_pre.bias": f.zeros(vw),
               v + "ln_post.weight": f.ones(vw), v + "ln_post.bias": f.zeros(vw), v + "proj": f.normal(vw, 1024)})
    for i in range(sizes.visual_layers):
        sd.update(_openclip_block(f"{v}transformer.resblocks.{i}.", vw, sizes.visual_mlp, f))
    sd = {k: (x.to(dtype) if x.is_floating_point() and x.dim() > 0 else x) for k, x in sd.items()}
    sd.update({k: b.float() for k, b in official_schedule_buffers().items()})  # float32, as the official file
    return sd


def write_tiny_tokenizer(folder: Path) -> Path:
    """A CLIP byte-level vocabulary without merges (514 ids): enough to encode the prompts of random weights."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


# ------------------------------------------------------------------------------------------------ sections
def check_parity_tests(cuda: bool) -> list[list[str]]:
    """The renderer tests (nvdiffrast parity included) in a pytest subprocess. They run from a copy of tests/ in a
    temporary folder: pytest treats the pack root (it has an ``__init__.py``) as a package and fails to import it
    when the checkout's folder name is not a Python identifier."""
    if not cuda:
        return [["nvdiffrast parity tests", "skipped: no CUDA (they run in the normal test suite and skip there)"]]
    import os
    import shutil

    files = sorted((REPO / "tests").glob("test_render_*.py")) + [REPO / "tests" / "conftest.py"]
    with tempfile.TemporaryDirectory(prefix="gpu-check-tests-") as tmp:
        for f in files:
            shutil.copy(f, tmp)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                   MAGICBOOST_SHARED=os.environ.get("MAGICBOOST_SHARED", str(REPO.parent / "shared")))
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "parity or nvdiffrast", tmp]
        r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    lines = r.stdout.strip().splitlines() or ["(no output)"]
    last = next((ln for ln in reversed(lines) if " passed" in ln or " failed" in ln or " error" in ln), lines[-1])
    return [["nvdiffrast parity tests (tests/test_render_*.py -k 'parity or nvdiffrast')",
             f"{'PASS' if r.returncode == 0 else 'FAIL'}: {last}"]]


def _denoiser(unet, cfg: MultiViewUNetConfig, device, cache: bool, amp, lat: int):
    from magicboost_core.model.conditioning import ViewConditioning
    from magicboost_core.model.denoiser import MultiViewDenoiser

    g = torch.Generator().manual_seed(1)
    a = 4
    cond = ViewConditioning(images=torch.zeros(a, 8, 8, 3), masks=torch.ones(a, 8, 8),
                            elevations=torch.zeros(a), azimuths=torch.tensor([0.0, 90.0, 180.0, 270.0]),
                            anchor_latents=torch.randn(a, cfg.in_channels, lat, lat, generator=g).to(device),
                            image_tokens=torch.randn(257, cfg.ip_in_dim, generator=g).to(device),
                            labels=torch.tensor([[0, 0], [0, 0], [500, 0.5], [500, 0.5], [500, 0.5]]))
    text = torch.randn(2, 77, cfg.context_dim, generator=g)
    model = SimpleNamespace(unet=unet, text_cond=text[0].to(device), text_uncond=text[1].to(device))
    return MultiViewDenoiser(model, cond, cfg_scale=5.0, use_anchor_cache=cache, autocast_dtype=amp)


def check_unet_precision(sizes: Sizes, device: torch.device) -> list[list[str]]:
    """Rows: variant, uncached s, cached s, max |err| and relative error of eps_cfg vs fp32."""
    cfg = sizes.unet
    with torch.device(device):
        torch.manual_seed(0)
        base = MultiViewUNet(cfg).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, cfg.in_channels, sizes.latent, sizes.latent, generator=g).to(device)
    el, az = torch.tensor([10.0, 0.0, -5.0, 20.0]), torch.tensor([45.0, 135.0, 225.0, 315.0])
    variants = [("fp32", torch.float32, None)]
    if device.type == "cuda":
        variants += [("fp16 autocast, fp32 weights (official)", torch.float32, torch.float16),
                     ("bf16 autocast, fp32 weights", torch.float32, torch.bfloat16),
                     ("fp16 weights", torch.float16, torch.float16), ("bf16 weights", torch.bfloat16, torch.bfloat16)]
    rows, ref = [], None
    for name, wdtype, amp in variants:
        unet = base if wdtype == torch.float32 else copy.deepcopy(base).to(wdtype)
        res = {}
        for cache in (False, True):
            den = _denoiser(unet, cfg, device, cache, amp, sizes.latent)
            sec, (eps, _) = timed(lambda: den.predict(z, 500, el, az), device, sizes.repeats, warmup=1)
            res[cache] = (sec, eps.float())
        eps = res[True][1]
        cache_err = float((res[True][1] - res[False][1]).abs().max())
        if ref is None:
            ref = eps
        err = float((eps - ref).abs().max())
        rel = float((eps - ref).norm() / ref.norm().clamp_min(1e-12))
        rows.append([name, f"{res[False][0] * 1e3:.1f} ms", f"{res[True][0] * 1e3:.1f} ms", f"{err:.2e}", f"{rel:.2e}",
                     f"{cache_err:.1e}"])
    return rows


def _convert_with_cli(ckpt: Path, out: Path, tokenizer: Path, sizes: Sizes, cuda: bool) -> Path:
    """``magicboost convert`` for full size; the same function with tiny architecture overrides on the CPU."""
    if cuda:
        from magicboost_core.cli import main as cli_main

        threads = torch.get_num_threads()
        rc = cli_main(["--threads", str(threads), "convert", str(ckpt), str(out), "--tokenizer", str(tokenizer)])
        torch.set_num_threads(threads)
        if rc:
            raise RuntimeError(f"magicboost convert exited with {rc}")
        return out
    from magicboost_core.model.convert_checkpoint import convert_official_checkpoint

    return convert_official_checkpoint(ckpt, out, tokenizer=tokenizer, num_head_channels=sizes.head_channels,
                                       vae_config=sizes.vae).output


def check_refinement(sizes: Sizes, device: torch.device, steps: int, workdir: Path) -> list[list[str]]:
    from magicboost_core.geometry.presets import get_preset
    from magicboost_core.model.bundle import MultiViewModel
    from magicboost_core.model.conditioning import encode_views
    from magicboost_core.refine.config import RefineConfig
    from magicboost_core.refine.loop import refine_mesh
    from magicboost_core.demo.sample_asset import load_sample_asset, make_coarse
    from magicboost_core.render.renderer import render

    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    ckpt = workdir / "magic-boost-random.pt"
    torch.save(official_layout_state_dict(sizes), ckpt)
    t_write = time.perf_counter() - t0
    folder = _convert_with_cli(ckpt, workdir / "converted", write_tiny_tokenizer(workdir / "tok"), sizes, cuda)
    t_conv = time.perf_counter() - t0 - t_write
    ckpt.unlink()
    model = MultiViewModel.from_pretrained(folder, device=device, dtype=torch.float32)
    model.requires_grad_(False)
    gt = load_sample_asset()
    coarse = make_coarse(gt)
    preset = get_preset("instant3d")
    px = sizes.render_px
    out = render(gt, preset.cameras(px))
    views = torch.cat([out.rgb, out.alpha], -1)
    cond = encode_views(model, views, list(preset.elevations), list(preset.azimuths),
                        generator=torch.Generator().manual_seed(0))
    cfg = RefineConfig(steps=steps, render_resolution=px, batch_size=sizes.batch,
                       texture_resolution=1024 if cuda else 64, preview_every=0)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    result = refine_mesh(model, cond, coarse, cfg, reference_views=(views[..., :3], views[..., 3:]))
    sync(device)
    per_step = result.seconds / max(1, result.steps_done)
    peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if cuda else "n/a (CPU)"
    sds = sum(1 for row in result.losses if "sds" in row)
    stops = [[f"stopped at step {result.steps_done}", line] for line in result.log if "non-finite" in line]
    return stops + [["official-layout checkpoint written", f"{t_write:.1f} s"],
            ["magicboost convert", f"{t_conv:.1f} s"],
            [f"refinement {result.steps_done} steps, {px} px, batch {sizes.batch} ({sds} SDS, AIU "
             f"{'yes' if result.pseudo_views is not None else 'no'})", f"{per_step:.3f} s/step"],
            ["peak VRAM", peak],
            ["extrapolated 2500 steps", f"{2500 * per_step / 60:.1f} min"]]


def check_rasterizer(sizes: Sizes, cuda: bool) -> list[list[str]]:
    spec = importlib.util.spec_from_file_location("mb_bench_render", REPO / "benchmarks" / "render.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from magicboost_core.render import nvdiffrast_available

    configs = [("torch", "cuda" if cuda else "cpu")]
    if cuda and nvdiffrast_available():
        configs.append(("nvdiffrast", "cuda"))
    rows = []
    for backend, dev in configs:
        r = mod.run_one(backend, dev, sizes.faces, sizes.repeats, torch.get_num_threads())
        rows.append([f"{backend} ({dev}), {r['faces']} faces, 4x256²", f"{r['forward'] * 1e3:.1f} ms",
                     f"{r['forward_backward'] * 1e3:.1f} ms", f"{r['peak_mb']:.0f} MiB"])
    if cuda and len(configs) == 1:
        rows.append(["nvdiffrast", "not installed", "", ""])
    return rows


# ------------------------------------------------------------------------------------------------ report
def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def run(out: Path | None = None, force_cpu: bool = False, refine_steps: int | None = None) -> str:
    cuda = torch.cuda.is_available() and not force_cpu
    device = torch.device("cuda" if cuda else "cpu")
    sizes = Sizes.full() if cuda else Sizes.tiny()
    steps = refine_steps or (100 if cuda else 8)
    name = torch.cuda.get_device_name(device) if cuda else "CPU only"
    parts = [f"# gpu-check: {name}", "",
             f"torch {torch.__version__}; {'full-size models' if cuda else 'no CUDA: CPU parts at tiny sizes'}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    if not cuda:
        parts += ["**No GPU found**: the nvdiffrast, precision and full-size rows need CUDA; run "
                  "`make gpu-check` on a GPU machine.", ""]
    t0 = time.perf_counter()
    parts += ["## Renderer parity", "", _table(["check", "result"], check_parity_tests(cuda)), ""]
    parts += [f"## UNet precision (SDS step: batch 4, CFG 5, 1 target + 4 anchors, latents {sizes.latent}²)", "",
              _table(["variant", "uncached", "cached step", "max abs err vs fp32", "rel err vs fp32",
                      "cache vs no cache"], check_unet_precision(sizes, device)), ""]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        parts += ["## Refinement (random weights, official layout -> magicboost convert)", "",
                  _table(["item", "value"], check_refinement(sizes, device, steps, Path(tmp))), ""]
    parts += ["## Rasterizer", "", _table(["backend", "forward", "forward+backward", "peak memory"],
                                          check_rasterizer(sizes, cuda)), ""]
    parts += [f"Total {time.perf_counter() - t0:.0f} s.", ""]
    text = "\n".join(parts)
    if out is not None:
        Path(out).write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check.md", help="Markdown report (default gpu_check.md)")
    p.add_argument("--cpu", action="store_true", help="run the CPU parts even when CUDA is available")
    p.add_argument("--refine-steps", type=int, default=None, help="refinement steps (default 100 on CUDA, 2 on CPU)")
    a = p.parse_args(argv)
    with contextlib.suppress(AttributeError):
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the parity rows
    print(run(Path(a.out), a.cpu, a.refine_steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
