"""The output folder of a batch: per-asset results (written atomically), resume, the summary table.

Layout::

    OUT/<id>/refined.glb    the refined mesh (GLB, y-up on disk)
    OUT/<id>/result.json    status, config hash, resolved config, seconds, metrics, error, log
    OUT/summary.csv         one row per manifest asset (rewritten as results arrive)
    OUT/summary.md          the same as a Markdown table

Every file is written to a temporary name in its own folder and moved into place with
``os.replace`` (:func:`~magicboost_core.validate.write_bytes_atomic`): a batch killed at
any moment leaves complete files or none. ``result.json`` is written after the mesh, so an ``ok``
result always has its mesh; an asset counts as done when both exist and the config hashes match.
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from ..validate import write_bytes_atomic
from .manifest import AssetSpec

__all__ = ["MESH_NAME", "RESULT_NAME", "STATUSES", "SUMMARY_COLUMNS", "finished_result", "write_outcome",
           "summary_row", "write_summary"]

MESH_NAME = "refined.glb"
RESULT_NAME = "result.json"
#: ok: refined now; skipped: already done with the same config hash (resume); failed: the asset raised;
#: crashed: its worker process died on every try; invalid: the manifest row is wrong (never run).
STATUSES = ("ok", "skipped", "failed", "crashed", "invalid")
_METRICS = ("psnr", "ssim", "chamfer", "normal_consistency")
SUMMARY_COLUMNS = ("id", "status", "seconds", "attempts", *_METRICS, *(f"{m}_coarse" for m in _METRICS),
                   "mesh", "config_hash", "error")


def finished_result(out: Path, spec: AssetSpec) -> dict | None:
    """The stored ``result.json`` of ``spec`` when it is ``ok``, has the same config hash and its mesh
    exists (the asset can be skipped); else None."""
    folder = Path(out) / spec.id
    try:
        record = json.loads((folder / RESULT_NAME).read_text())
    except (OSError, ValueError):
        return None
    same = record.get("status") == "ok" and record.get("config_hash") == spec.config_hash
    return record if same and (folder / MESH_NAME).is_file() else None


def write_outcome(out: Path, spec: AssetSpec, outcome: dict, attempts: int) -> dict:
    """Write the mesh (if any) and ``result.json`` of one finished asset; returns the stored record."""
    folder = Path(out) / spec.id
    folder.mkdir(parents=True, exist_ok=True)
    glb = outcome.get("glb")
    record = {k: v for k, v in outcome.items() if k != "glb"}
    record.update(id=spec.id, row=spec.row, config_hash=spec.config_hash, config=spec.config, attempts=attempts,
                  inputs={"mesh": spec.mesh, "views": spec.views, "preset": spec.preset,
                          "ground_truth": spec.ground_truth},
                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), mesh=None)
    if glb:
        write_bytes_atomic(folder / MESH_NAME, glb, overwrite=True)
        record["mesh"] = f"{spec.id}/{MESH_NAME}"
    else:
        (folder / MESH_NAME).unlink(missing_ok=True)  # a mesh of an older config must not pass for this one
    text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
    write_bytes_atomic(folder / RESULT_NAME, text.encode(), overwrite=True)
    return record


def summary_row(spec: AssetSpec, status: str, record: dict | None = None) -> dict:
    """One summary line: id, status, seconds, attempts, metrics (refined and coarse), mesh, error."""
    record = record or {}
    row = {c: "" for c in SUMMARY_COLUMNS}
    row.update(id=spec.id, status=status, config_hash=spec.config_hash,
               error=(spec.error or record.get("error") or "") if status != "skipped" else "")
    if record:
        row.update(seconds=round(float(record.get("seconds") or 0.0), 3), attempts=record.get("attempts", ""),
                   mesh=record.get("mesh") or "")
    metrics = record.get("metrics") or {}
    for m in _METRICS:
        if m in metrics.get("refined", {}):
            row[m] = metrics["refined"][m]
        if m in metrics.get("coarse", {}):
            row[f"{m}_coarse"] = metrics["coarse"][m]
    return row


def _fmt(key: str, value) -> str:
    if value == "" or value is None:
        return ""
    digits = {"seconds": 1, "psnr": 2, "ssim": 3, "chamfer": 5, "normal_consistency": 3}
    base = key.removesuffix("_coarse")
    if base in digits and isinstance(value, (int, float)):
        return f"{value:.{digits[base]}f}"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "..."


def _markdown(rows: list[dict]) -> str:
    has_metrics = any(r["psnr"] != "" for r in rows)
    cols = [c for c in SUMMARY_COLUMNS if c != "config_hash" and (has_metrics or c.split("_coarse")[0] not in _METRICS)]
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    lines = [f"{len(rows)} assets: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(c, r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_summary(out: Path, rows: list[dict]) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.md`` (atomically) for ``rows`` from :func:`summary_row`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out = Path(out)
    return (write_bytes_atomic(out / "summary.csv", buf.getvalue().encode(), overwrite=True),
            write_bytes_atomic(out / "summary.md", _markdown(rows).encode(), overwrite=True))
