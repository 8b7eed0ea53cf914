"""Batch manifests: one asset per CSV row or JSONL line, parsed into :class:`AssetSpec`.

Columns / keys (paths are relative to the manifest's folder unless absolute):

=============== ========== ====================================================================
``mesh``        required   coarse mesh (GLB, glTF, OBJ, PLY, ...)
``views``       required   the condition views in the preset's anchor order: several image files
                           (CSV: separated by ``;`` or ``|``; JSONL: a list) or ONE grid image
                           (Instant3D 2x2, Zero123++/InstantMesh 3x2), split by the preset's layout
``id``          optional   output folder name (default: the mesh file's stem); unique per manifest
``preset``      optional   ``instant3d`` (default) or ``instantmesh``
``ground_truth`` optional  a reference mesh in the coarse mesh's frame: adds metrics to the summary
``config``      optional   RefineConfig overrides, a JSON object (``{"steps": 500, "aiu": {"enabled": false}}``)
``config.KEY``  optional   one override per column/key, e.g. ``config.steps``, ``config.aiu.strength``
=============== ========== ====================================================================

A problem in one row never stops the batch: the row becomes an :class:`AssetSpec` with ``error`` set
(the message names the row, the column and the fix) and appears in the summary as ``invalid``.
Only a manifest that cannot be read at all (missing file, unknown format, no ``mesh`` column, unknown
columns) raises :class:`ManifestError`.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AssetSpec", "ManifestError", "read_manifest", "parse_value", "COLUMNS"]

COLUMNS = ("id", "mesh", "views", "preset", "ground_truth", "config")
_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ManifestError(ValueError):
    """The manifest as a whole cannot be read; the message names the file and the fix."""


@dataclass
class AssetSpec:
    """One asset of a batch, with absolute paths; ``row``: its line number in the manifest (CSV header = 1).

    ``overrides``: RefineConfig settings for this asset (nested dict, e.g. ``{"aiu": {"enabled": False}}``).
    ``config`` / ``config_hash``: filled by :func:`magicboost_core.batch.plan.plan_batch` (the resolved
    RefineConfig as a dict, and the hash of config + inputs + model that makes a result reusable).
    ``error``: set when the row is invalid; such an asset is reported, never run.
    """

    row: int
    id: str
    mesh: str = ""
    views: list[str] = field(default_factory=list)
    preset: str = "instant3d"
    ground_truth: str | None = None
    overrides: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    config_hash: str = ""
    error: str | None = None


def parse_value(text: str):
    """A CSV cell or ``--set`` value: JSON when it parses (``4``, ``0.5``, ``true``, ``[1, 2]``), else the text."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


def set_dotted(target: dict, key: str, value) -> None:
    """``set_dotted(d, "aiu.strength", 0.2)`` -> ``d["aiu"]["strength"] = 0.2`` (creates the inner dict)."""
    parts = key.split(".")
    node = target
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"config key {key!r}: {p!r} is a single value, not a group of settings.")
    node[parts[-1]] = value


def _rows(path: Path) -> list[tuple[int, dict]]:
    """(line or row number, raw dict) per asset; raises :class:`ManifestError` for unreadable files."""
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                rows.append((n, {"__error__": f"line {n} is not valid JSON ({e.msg} at column {e.colno})."}))
                continue
            if not isinstance(obj, dict):
                rows.append((n, {"__error__": f"line {n} must be a JSON object with at least 'mesh' and 'views'."}))
                continue
            rows.append((n, obj))
        return rows
    if suffix in (".csv", ".tsv"):
        return _csv_rows(path, text, "\t" if suffix == ".tsv" else ",")
    raise ManifestError(f"{path}: unknown manifest format '{suffix}'; use a .csv (header row) or .jsonl "
                        "(one JSON object per line) file.")


def _csv_rows(path: Path, text: str, delimiter: str) -> list[tuple[int, dict]]:
    """CSV rows keyed by line number (the header is line 1); blank lines are skipped."""
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter, restkey="__extra__")
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "mesh" not in header or "views" not in header:
        raise ManifestError(f"{path}: the CSV header must name at least the columns 'mesh' and 'views' "
                            f"(found {header}); known columns: {list(COLUMNS)} and config.KEY.")
    _check_columns(path, header)
    rows = []
    for row in reader:
        n = reader.line_num
        cells = {k.strip(): (v or "").strip() for k, v in row.items() if k != "__extra__" and isinstance(v, str)}
        if row.get("__extra__"):
            cells = {"__error__": f"line {n} has {len(header) + len(row['__extra__'])} cells for {len(header)} "
                                  "columns; separate view files with ';' (not ',') or quote the cell."}
        elif not any(cells.values()):
            continue
        rows.append((n, {k: v for k, v in cells.items() if v}))
    return rows


def _check_columns(path: Path, names) -> None:
    unknown = sorted(n for n in names if n not in COLUMNS and not n.startswith("config."))
    if unknown:
        raise ManifestError(f"{path}: unknown column(s) {unknown}; known: {list(COLUMNS)}, and config.KEY for "
                            "one RefineConfig override (e.g. config.steps).")


def _views(raw, base: Path) -> list[str]:
    if isinstance(raw, str):
        items = [s.strip() for s in re.split(r"[;|]", raw) if s.strip()]
    elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        items = raw
    else:
        raise ValueError("'views' must be image paths: a list (JSONL) or one string with ';' between files.")
    if not items:
        raise ValueError("'views' is empty; give the condition view images or one grid image.")
    return [_existing(s, base, "views") for s in items]


def _existing(p: str, base: Path, column: str) -> str:
    if not isinstance(p, str) or not p:
        raise ValueError(f"'{column}' must be a file path; got {p!r}.")
    full = (base / p).expanduser() if not Path(p).expanduser().is_absolute() else Path(p).expanduser()
    if not full.is_file():
        raise ValueError(f"'{column}': file not found: {full} (relative paths are read from the manifest's folder).")
    return str(full.resolve())


def _overrides(raw: dict) -> dict:
    out: dict = {}
    cfg = raw.get("config")
    if cfg is not None and cfg != "":
        if isinstance(cfg, str):
            try:
                cfg = json.loads(cfg)
            except json.JSONDecodeError as e:
                raise ValueError(f"'config' is not a JSON object ({e.msg}); write e.g. {{\"steps\": 500}}.") from None
        if not isinstance(cfg, dict):
            raise ValueError("'config' must be a JSON object of RefineConfig settings, e.g. {\"steps\": 500}.")
        for k, v in cfg.items():
            set_dotted(out, k, v)
    for k, v in raw.items():
        if k.startswith("config."):
            set_dotted(out, k[len("config."):], parse_value(v) if isinstance(v, str) else v)
    return out


def _spec(n: int, raw: dict, base: Path) -> AssetSpec:
    """One row -> AssetSpec; problems become ``error`` (prefixed with the row number)."""
    if raw.get("id"):
        name = str(raw["id"])
    else:  # from the mesh file's name, made fit for a folder name
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(raw.get("mesh") or "")).stem).lstrip("._-") or f"row{n}"
    spec = AssetSpec(row=n, id=name)
    try:
        if "__error__" in raw:
            raise ValueError(raw["__error__"])
        if not _ID_OK.match(spec.id):
            raise ValueError(f"id {spec.id!r} cannot name an output folder; use letters, digits, '.', '_', '-'.")
        if not raw.get("mesh"):
            raise ValueError("'mesh' is missing; give the coarse mesh file.")
        if not raw.get("views"):
            raise ValueError("'views' is missing; give the condition view images or one grid image.")
        spec.mesh = _existing(raw["mesh"], base, "mesh")
        spec.views = _views(raw["views"], base)
        spec.preset = str(raw.get("preset") or "instant3d")
        if raw.get("ground_truth"):
            spec.ground_truth = _existing(raw["ground_truth"], base, "ground_truth")
        spec.overrides = _overrides(raw)
    except ValueError as e:
        spec.error = f"row {n}: {e}"
    return spec


def read_manifest(path) -> list[AssetSpec]:
    """Parse a CSV / JSONL manifest into one :class:`AssetSpec` per asset (invalid rows carry ``error``).

    Checks here: columns, files exist, ids unique. The view count, preset and config overrides are
    checked by :func:`magicboost_core.batch.plan.plan_batch`, which also resolves the config.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    base = path.resolve().parent
    rows = _rows(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        _check_columns(path, {k for _, r in rows for k in r if k != "__error__"})
    specs = [_spec(n, raw, base) for n, raw in rows]
    if not specs:
        raise ManifestError(f"{path}: no assets in the manifest.")
    first: dict[str, int] = {}
    for s in specs:
        if s.id in first and s.error is None:
            s.error = (f"row {s.row}: id {s.id!r} is already used by row {first[s.id]}; add an 'id' column "
                       "with a unique name per asset.")
        first.setdefault(s.id, s.row)
    return specs
