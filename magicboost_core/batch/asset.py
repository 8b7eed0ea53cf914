"""Worker side: refine one asset and hand back an *outcome* (a plain, picklable dict).

The same :func:`run_asset` runs in a local worker process, in this process (``--workers 0``) and in
a Ray task, so every mode gives the same mesh for the same seed and thread count. The worker never
writes into the output folder: the refined mesh comes back as GLB bytes and the driver writes it
(atomically), so Ray workers need no shared output folder, only read access to the inputs.

Outcome keys: ``id``, ``status`` ("ok" | "failed"), ``error`` (one line) and ``traceback`` when failed,
``seconds`` (the whole asset: load, refine, evaluate), ``refine_seconds``, ``steps``, ``metrics``
({"refined": {...}, "coarse": {...}} when a ground truth is given), ``glb`` (bytes), ``log``,
``host``, ``pid``.
"""
from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from ..refine.pipeline import read_views
from .adapter import load_model, refine_views
from .manifest import AssetSpec

__all__ = ["BatchJob", "run_asset"]

_MODELS: dict = {}  # per worker process: (source, device) -> model, loaded once


@dataclass(frozen=True)
class BatchJob:
    """Settings shared by every asset of a batch (sent to each worker).

    ``device``: "auto" = CUDA when the worker sees a GPU, else CPU. ``threads``: torch intra-op threads
    per worker (1 gives bit-identical results across modes). ``eval_resolution`` / ``eval_points``:
    render size and surface samples of the ground-truth metrics
    (:func:`magicboost_core.eval.held_out.evaluate_against`).
    ``crash_once``: testing aid, ``(asset id, step, marker file)``: the worker process refining that
    asset kills itself (SIGKILL) at that step unless the marker file exists (it creates it first), to
    check that a dead worker's asset is retried.
    """

    model: str | None = None
    device: str = "auto"
    threads: int = 1
    eval_resolution: int = 128
    eval_points: int = 20000
    crash_once: tuple[str, int, str] | None = None

    @property
    def evaluation(self) -> dict:
        return {"resolution": self.eval_resolution, "points": self.eval_points}


def _device(job: BatchJob) -> str:
    if job.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return job.device


def _model(source: str | None, device: str):
    key = (source, device)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker at a time
        _MODELS[key] = load_model(source, device)
    return _MODELS[key]


def _crash_hook(spec: AssetSpec, job: BatchJob):
    """``progress`` callback that simulates a dead worker (see ``BatchJob.crash_once``), or None."""
    if not job.crash_once or job.crash_once[0] != spec.id:
        return None
    _, step, marker = job.crash_once

    def progress(s, total, losses):
        if s == step and not os.path.exists(marker):
            Path(marker).write_text(f"killed pid {os.getpid()} at step {s}/{total}\n")
            os.kill(os.getpid(), signal.SIGKILL)

    return progress


def _glb_bytes(mesh) -> bytes:
    from ..geometry.mesh_io import save_mesh

    with tempfile.TemporaryDirectory(prefix="magicboost-batch-") as tmp:
        path = save_mesh(mesh, Path(tmp) / "refined.glb")
        return path.read_bytes()


def _metrics(refined, coarse, spec: AssetSpec, preset, job: BatchJob) -> dict:
    from ..geometry.mesh_io import load_mesh
    from ..eval.held_out import evaluate_against

    gt = load_mesh(spec.ground_truth, merge_seams=True)
    kw = dict(resolution=job.eval_resolution, num_points=job.eval_points, distance=preset.distance,
              fovy_deg=preset.fovy_deg)
    return {"refined": evaluate_against(refined, gt, **kw), "coarse": evaluate_against(coarse, gt, **kw)}


def run_asset(spec: AssetSpec, job: BatchJob) -> dict:
    """Refine one asset; never raises for a problem of the asset (it becomes ``status="failed"``)."""
    from ..geometry.mesh_io import load_mesh
    from ..geometry.presets import get_preset
    from ..refine.config import RefineConfig

    t0 = time.time()
    out = {"id": spec.id, "status": "failed", "error": None, "seconds": 0.0, "refine_seconds": 0.0, "steps": 0,
           "metrics": {}, "glb": None, "log": [], "host": socket.gethostname(), "pid": os.getpid()}
    try:
        torch.set_num_threads(max(1, int(job.threads)))
        config = RefineConfig.from_dict(spec.config)
        torch.manual_seed(int(config.seed))
        preset = get_preset(config.preset)
        model = _model(job.model, _device(job))
        mesh = load_mesh(spec.mesh, merge_seams=True)
        views = read_views(spec.views, preset)
        result = refine_views(model, mesh, views, config, progress=_crash_hook(spec, job),
                              generator=torch.Generator().manual_seed(int(config.seed)))
        if result.interrupted:
            raise RuntimeError("the refinement was interrupted before its last step")
        out.update(glb=_glb_bytes(result.mesh), steps=result.steps_done, refine_seconds=result.seconds,
                   log=list(result.log))
        if spec.ground_truth:
            out["metrics"] = _metrics(result.mesh, mesh, spec, preset, job)
        out["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - one asset's failure is reported, never fatal to the batch
        out["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        out["traceback"] = traceback.format_exc()
        out["glb"] = None
    out["seconds"] = time.time() - t0
    return out
