"""``magicboost convert`` and ``magicboost sample`` (registered by :func:`register`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register", "cmd_convert", "cmd_sample", "parse_angles", "load_view_images"]

_DTYPES = {"keep": None, "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def parse_angles(text, name: str) -> list[float]:
    """'0,90,180' / '0 90 180' / list -> floats; clear error otherwise."""
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        text = ",".join(str(t) for t in text)
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    try:
        return [float(p) for p in parts]
    except ValueError as e:
        raise ValueError(
            f"{name}: could not read a list of numbers from {text!r} ({e}); use e.g. '0,90,180,270'.") from e


def load_view_images(paths):
    """Image files -> (A, H, W, 3|4) float32 numpy in [0, 1]; RGBA kept when any view has alpha."""
    import numpy as np
    from PIL import Image

    imgs, alpha = [], False
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"view image not found: {p}")
        im = Image.open(p)
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        alpha |= has_alpha
        imgs.append(im.convert("RGBA") if has_alpha else im.convert("RGB"))
    if alpha:
        imgs = [im.convert("RGBA") for im in imgs]
    sizes = {im.size for im in imgs}
    if len(sizes) > 1:
        raise ValueError(f"view images differ in size {sorted(sizes)}; give views of one size.")
    return np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in imgs])


def _dtype(name):
    import torch

    return None if _DTYPES[name] is None else getattr(torch, _DTYPES[name])


def cmd_convert(args) -> int:
    from .convert_checkpoint import convert_official_checkpoint

    report = convert_official_checkpoint(
        args.checkpoint, args.out_dir, vae=args.vae, clip_vision=args.clip_vision, text_encoder=args.text_encoder,
        tokenizer=args.tokenizer, name=args.name, num_head_channels=args.head_channels, dtype=_dtype(args.dtype),
        default_preset=args.preset,
    )
    for n in report.notes:
        print(f"note: {n}")
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"converted model written to {report.output}")
    return 0


def cmd_sample(args) -> int:
    import numpy as np
    import torch
    from PIL import Image
    from tqdm import tqdm

    from ..geometry.presets import get_preset
    from .bundle import MultiViewModel
    from .conditioning import encode_views
    from .sampling import sample_novel_views

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = MultiViewModel.from_pretrained(args.model, device=device)
    images = load_view_images(args.views)
    n_views = images.shape[0]
    el, az = parse_angles(args.elevations, "--elevations"), parse_angles(args.azimuths, "--azimuths")
    if not el and not az:
        preset = get_preset(model.info.default_preset)
        if preset.num_views != n_views:
            raise ValueError(f"{n_views} view image(s) but the model's default preset {preset.name!r} has "
                             f"{preset.num_views}; pass --elevations and --azimuths.")
        el, az = list(preset.elevations), list(preset.azimuths)
    if len(el) == 1 and n_views > 1:
        el = el * n_views
    tel, taz = parse_angles(args.target_elev, "--target-elev"), parse_angles(args.target_az, "--target-az")
    if len(tel) == 1 and len(taz) > 1:
        tel = tel * len(taz)
    if len(tel) != len(taz) or not tel:
        raise ValueError(f"--target-elev has {len(tel)} value(s) and --target-az {len(taz)}; give one elevation "
                         "(or one per azimuth) and at least one azimuth.")
    g = torch.Generator().manual_seed(args.seed)
    cond = encode_views(model, images, el, az, generator=g, strength_tex=args.strength_tex,
                        strength_geo=args.strength_geo)
    bar = tqdm(total=None, desc="sampling", unit="step")

    def progress(step, total, _preview):
        bar.total = total
        bar.update(step - bar.n)

    out = sample_novel_views(model, cond, tel, taz, steps=args.steps, cfg=args.cfg, seed=args.seed,
                             batch_size=args.batch_size, progress=progress, init=args.init,
                             strength=args.init_strength if args.init == "nearest_view" else 1.0)
    bar.close()
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    for i, (img, e, a) in enumerate(zip(out, tel, taz)):
        path = d / f"view_{i:02d}_el{e:g}_az{a:g}.png"
        Image.fromarray((img.numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)).save(path)
        print(path)
    return 0


def register(subparsers) -> None:
    """Add ``convert`` and ``sample`` to the ``magicboost`` command line."""
    c = subparsers.add_parser(
        "convert", help="convert the official Magic-Boost checkpoint into a model folder (safetensors)",
        description="Convert the official checkpoint (.pt read with weights_only, or .safetensors) into a model "
                    "folder (config.json + model.safetensors). Never overwrites.",
    )
    c.add_argument("checkpoint", help="official checkpoint, e.g. magic-boost-4view.pt")
    c.add_argument("out_dir", help="new (or empty) output folder")
    c.add_argument("--vae", help="SD VAE weights (ComfyUI models/vae) if the checkpoint has no vae_model.* keys")
    c.add_argument("--clip-vision", help="CLIP-ViT-H-14 vision weights (ComfyUI models/clip_vision) if the "
                                         "checkpoint has no clip_model.model.visual.* keys")
    c.add_argument("--text-encoder", help="SD-2.1 / OpenCLIP ViT-H text encoder weights (needs --tokenizer)")
    c.add_argument("--tokenizer", help="folder with vocab.json + merges.txt (ComfyUI: comfy/sd1_tokenizer)")
    c.add_argument("--name", help="model name stored in config.json (default: checkpoint file name)")
    c.add_argument("--head-channels", type=int, default=None, help="UNet attention head width (default 64)")
    c.add_argument("--dtype", choices=sorted(_DTYPES), default="keep", help="storage dtype (default: keep)")
    c.add_argument("--preset", default="instant3d", help="default view preset recorded in the model")
    c.set_defaults(func=cmd_convert)

    s = subparsers.add_parser(
        "sample", help="generate novel views from condition views with a converted model",
        description="Novel-view sampling (DDIM, CFG) as the official demo script.",
    )
    s.add_argument("model", help="model folder (from 'magicboost convert') or its model.safetensors")
    s.add_argument("views", nargs="+", help="condition view images, anchor 0 = reference view (RGBA or RGB)")
    s.add_argument("--elevations", help="view elevations in degrees, e.g. '0,0,0,0' (default: model preset)")
    s.add_argument("--azimuths", help="view azimuths in degrees, e.g. '0,90,180,270' (default: model preset)")
    s.add_argument("--target-elev", default="10", help="target elevation(s) in degrees (default 10)")
    s.add_argument("--target-az", default="45", help="target azimuth(s) in degrees (default 45)")
    s.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    s.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale (default 5)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=4)
    s.add_argument("--strength-tex", type=float, default=1.0,
                   help="condition strength label of side anchors (demo: 1 = clean labels; refine uses 0)")
    s.add_argument("--strength-geo", type=float, default=1.0)
    s.add_argument("--init", choices=["noise", "nearest_view"], default="noise",
                   help="start from pure noise (official) or SDEdit from the nearest condition view")
    s.add_argument("--init-strength", type=float, default=0.6,
                   help="with --init nearest_view: SDEdit strength in (0, 1] (fraction of the DDIM steps run; "
                        "default 0.6)")
    s.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    s.add_argument("--out", default="output/novel_views", help="output folder for PNGs")
    s.set_defaults(func=cmd_sample)


def main(argv=None) -> int:  # pragma: no cover - convenience for `python -m magicboost_core.model.cli`
    p = argparse.ArgumentParser(prog="magicboost")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
