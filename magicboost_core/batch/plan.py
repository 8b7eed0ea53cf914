"""Before anything runs: resolve each asset's config, check its views, and hash what makes a result.

The **config hash** of an asset is the SHA-256 of a canonical JSON of everything that determines its
output: the resolved RefineConfig, the contents of the mesh / view / ground-truth files, the model
(folder listing: names, sizes, modification times), and the evaluation settings. ``magicboost batch``
skips an asset whose ``result.json`` is ``ok`` with the same hash (resume); any change re-runs it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..refine.pipeline import DEMO_SOURCES, is_grid_input
from .adapter import resolve_config
from .manifest import AssetSpec

__all__ = ["plan_batch", "config_hash", "model_fingerprint", "file_digest", "HASH_FORMAT"]

#: Bumped when the meaning of a result changes (output layout, hashing); old results then re-run.
HASH_FORMAT = 1


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_fingerprint(source: str | None) -> list:
    """What identifies the model cheaply: ``[kind, [name, size, mtime_ns] per file]`` (never reads weights)."""
    if source in DEMO_SOURCES:
        from ..model.bundle import demo_model_dir

        folder, kind = demo_model_dir(), "demo"
    else:
        folder, kind = Path(source).expanduser().resolve(), "model"
    if folder.is_file():
        st = folder.stat()
        return [kind, [[folder.name, st.st_size, st.st_mtime_ns]]]
    if not folder.is_dir():
        raise FileNotFoundError(f"model not found: {folder} (give a converted model folder, or leave --model out "
                                "for the demo model).")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return [kind, [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]]


def config_hash(spec: AssetSpec, model: list, evaluation: dict) -> str:
    """16-hex-digit hash of config + inputs + model + evaluation settings (see the module docstring)."""
    payload = {
        "format": HASH_FORMAT,
        "config": spec.config,
        "mesh": file_digest(spec.mesh),
        "views": [file_digest(v) for v in spec.views],
        "ground_truth": file_digest(spec.ground_truth) if spec.ground_truth else None,
        "evaluation": evaluation if spec.ground_truth else None,
        "model": model,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_views(spec: AssetSpec, preset) -> None:
    """Raise ValueError when the view files do not fit the preset (count, grid layout, sizes)."""
    from ..images import read_image_size

    sizes = [read_image_size(v, "view image") for v in spec.views]  # headers only: nothing is decoded
    if is_grid_input(len(spec.views), preset):
        rows, cols = preset.grid
        w, h = sizes[0]
        if h % rows or w % cols:
            raise ValueError(f"the grid image is {w} x {h} px, which does not split into the {preset.name} "
                             f"layout of {rows} rows x {cols} columns.")
        return
    if len(set(sizes)) != 1:
        raise ValueError(f"the view images have different sizes {sorted(set(sizes))}; resize them to one size.")


def plan_batch(specs: list[AssetSpec], model_source: str | None, global_overrides: dict,
               evaluation: dict) -> list[AssetSpec]:
    """Fill ``config`` and ``config_hash`` of every valid spec (in place; also returned).

    ``global_overrides`` (the ``--set`` values) apply first, then each row's own overrides. A bad
    preset, view set or config setting sets the spec's ``error`` instead of raising.
    """
    from ..geometry.presets import get_preset

    model = model_fingerprint(model_source)
    for spec in specs:
        if spec.error:
            continue
        try:
            preset = get_preset(spec.preset)
            _check_views(spec, preset)
            overrides = _deep_merge(global_overrides, spec.overrides)
            if "preset" in overrides:
                raise ValueError("the preset is set by the 'preset' column, not by a config override.")
            cfg = resolve_config(model_source, preset.name, overrides)
            spec.preset = preset.name
            spec.config = json.loads(json.dumps(cfg.to_dict()))  # plain JSON types (tuples -> lists)
            spec.config_hash = config_hash(spec, model, evaluation)
        except (ValueError, OSError) as e:
            spec.error = f"row {spec.row}: {e}"
    return specs


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
