"""``magicboost convert`` and ``magicboost sample`` (registered by :func:`register`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register", "cmd_convert", "cmd_sample", "parse_angles", "load_view_images"]

_DTYPES = {"keep": None, "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def parse_angles(text, name: str, lo: float = -360.0, hi: float = 360.0) -> list[float]:
    """'0,90,180' / '0 90 180' / list -> finite floats in [lo, hi] degrees; clear error naming ``name``
    otherwise (``inf`` or ``nan`` would render a black image)."""
    from ..validate import number_list

    if text is None:
        return []
    return number_list(text, name, lo, hi)


def load_view_images(paths):
    """Image files -> (A, H, W, 3|4) float32 numpy in [0, 1]; RGBA kept when any view has alpha.

    Files are read with :func:`~magicboost_core.images.read_image_file` (regular files, size and pixel caps,
    16-bit PNGs read correctly)."""
    import numpy as np

    from ..images import read_image_file

    arrays, alpha = [], False
    for p in paths:
        rgba, has_alpha = read_image_file(p, "view image")
        alpha |= has_alpha
        arrays.append(rgba)
    sizes = {a.shape[1::-1] for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"view images differ in size {sorted(sizes)} (width, height); give views of one size.")
    stacked = np.stack(arrays)
    return stacked if alpha else np.ascontiguousarray(stacked[..., :3])


def _dtype(name):
    import torch

    return None if _DTYPES[name] is None else getattr(torch, _DTYPES[name])


def cmd_convert(args) -> int:
    from .convert_checkpoint import convert_official_checkpoint

    report = convert_official_checkpoint(
        args.checkpoint, args.out_dir, vae=args.vae, clip_vision=args.clip_vision, text_encoder=args.text_encoder,
        tokenizer=args.tokenizer, name=args.name, num_head_channels=args.head_channels, dtype=_dtype(args.dtype),
        default_preset=args.preset, allow_extra_keys=args.allow_extra_keys, allow_zero_prompts=args.allow_zero_prompts,
    )
    for n in report.notes:
        print(f"note: {n}")
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"converted model written to {report.output}")
    return 0


def cmd_sample(args) -> int:
    from ..validate import finite_number, output_dir_for_run, resolve_device

    device = resolve_device(args.device)
    for name, value, lo, hi in (("--steps", args.steps, 1, 10000), ("--batch-size", args.batch_size, 1, 1024)):
        finite_number(value, name, lo, hi, integer=True)
    finite_number(args.cfg, "--cfg", 0.0, 100.0)
    for name, value in (("--strength-tex", args.strength_tex), ("--strength-geo", args.strength_geo)):
        finite_number(value, name, 0.0, 1.0)
    with output_dir_for_run(args.out, "--out") as out_dir:  # checked before the (long) model load and sampling
        return _sample_into(args, out_dir, device)


def _sample_into(args, out_dir: Path, device) -> int:
    """The work of ``magicboost sample`` once its options are checked: PNGs written into ``out_dir``."""
    import numpy as np
    import torch
    from PIL import Image
    from tqdm import tqdm

    from ..geometry.presets import get_preset
    from .bundle import MultiViewModel
    from .conditioning import encode_views, novel_view_conditioning, with_novel_view_prompts
    from .sampling import sample_novel_views

    images = load_view_images(args.views)
    model = MultiViewModel.from_pretrained(args.model, device=device)
    n_views = images.shape[0]
    el, az = parse_angles(args.elevations, "--elevations", -90, 90), parse_angles(args.azimuths, "--azimuths")
    if not el and not az:
        preset = get_preset(model.info.default_preset)
        if preset.num_views != n_views:
            raise ValueError(f"{n_views} view image(s) but the model's default preset {preset.name!r} has "
                             f"{preset.num_views}; pass --elevations and --azimuths.")
        el, az = list(preset.elevations), list(preset.azimuths)
    if len(el) == 1 and n_views > 1:
        el = el * n_views
    tel, taz = parse_angles(args.target_elev, "--target-elev", -90, 90), parse_angles(args.target_az, "--target-az")
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

    # Official demo: every anchor its own CLIP tokens, the novel-view prompts (labels from --strength-*, default 1 = 0).
    cond = novel_view_conditioning(cond, zero_labels=False)
    out = sample_novel_views(with_novel_view_prompts(model), cond, tel, taz, steps=args.steps, cfg=args.cfg,
                             seed=args.seed, batch_size=args.batch_size, progress=progress, init=args.init,
                             strength=args.init_strength if args.init == "nearest_view" else 1.0)
    bar.close()
    for i, (img, e, a) in enumerate(zip(out, tel, taz)):
        path = _save_new_png(out_dir, f"view_{i:02d}_el{e:g}_az{a:g}",
                             Image.fromarray((img.numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)))
        print(path)
    return 0


def _save_new_png(folder: Path, stem: str, image) -> Path:
    """Save ``image`` as ``stem.png`` in ``folder``, or ``stem_2.png``, ``stem_3.png``, ... when earlier runs
    left that name: earlier outputs are never replaced (names claimed exclusively, written atomically)."""
    import io

    from ..validate import write_bytes_atomic
    from ..validate import claim_unique_path

    path, _ = claim_unique_path(folder, lambda n: f"{stem}.png" if n == 1 else f"{stem}_{n}.png")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    try:
        return write_bytes_atomic(path, buf.getvalue(), overwrite=True)  # replaces only our own placeholder
    except BaseException:
        path.unlink(missing_ok=True)
        raise


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
    c.add_argument("--text-encoder", help="SD-2.1 / OpenCLIP ViT-H text encoder weights, if the checkpoint has no "
                                          "clip_model.model.* text tower")
    c.add_argument("--tokenizer", help="CLIP tokenizer: folder with vocab.json + merges.txt or a BPE file "
                                       "(default: found automatically: ComfyUI's comfy/sd1_tokenizer, $MAGICBOOST_"
                                       "TOKENIZER, or the vocabulary of an installed open_clip / clip package)")
    c.add_argument("--allow-extra-keys", action="store_true",
                   help="skip unknown checkpoint keys instead of refusing the file (model_ema.*, logvar are always "
                        "skipped)")
    c.add_argument("--allow-zero-prompts", action="store_true",
                   help="store zero prompt embeddings when no text encoder or tokenizer is available (tests only; "
                        "refinement refuses such a model)")
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
