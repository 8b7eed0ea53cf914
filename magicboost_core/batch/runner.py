"""``run_batch``: manifest -> plan -> resume check -> local pool or Ray -> outputs and summary."""
from __future__ import annotations

import sys
from pathlib import Path

from .asset import BatchJob
from .manifest import AssetSpec, read_manifest
from .outputs import finished_result, summary_row, write_outcome, write_summary
from .plan import plan_batch

__all__ = ["run_batch", "plan_manifest"]


def plan_manifest(manifest, out, job: BatchJob, overrides: dict | None = None,
                  force: bool = False) -> tuple[list[AssetSpec], dict[int, dict]]:
    """Read and plan ``manifest``; returns (specs, {row number: summary row}) with rows for the assets that will
    not run: ``invalid`` ones and, unless ``force``, ``skipped`` ones (done with the same config hash)."""
    specs = plan_batch(read_manifest(manifest), job.model, overrides or {}, job.evaluation)
    rows: dict[str, dict] = {}
    for spec in specs:
        if spec.error:
            rows[spec.row] = summary_row(spec, "invalid")
        elif not force and (record := finished_result(Path(out), spec)) is not None:
            rows[spec.row] = summary_row(spec, "skipped", record)
    return specs, rows


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="asset", desc="batch", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def run_batch(manifest, out, job: BatchJob | None = None, overrides: dict | None = None, workers: int = 1,
              ray_address: str | None = None, num_cpus: float = 1, num_gpus: float = 0, max_retries: int = 2,
              force: bool = False, progress: bool = True, log=None) -> list[dict]:
    """Refine every asset of ``manifest`` into ``out``; returns the summary rows in manifest order.

    Args:
        manifest: CSV / JSONL file (:mod:`magicboost_core.batch.manifest`).
        out: output folder (:mod:`magicboost_core.batch.outputs`); created if missing.
        job: model, device, threads, evaluation settings (:class:`BatchJob`).
        overrides: RefineConfig settings for every asset (nested dict), before each row's own.
        workers: local worker processes (0 = this process); ignored with ``ray_address``.
        ray_address: None = local mode; "local" / "auto" / "HOST:PORT": Ray mode
            (:mod:`magicboost_core.batch.ray_cluster`) with ``num_cpus`` / ``num_gpus`` per asset.
        max_retries: re-runs of an asset whose worker process died.
        force: re-run assets that are already done.
        progress: show a tqdm bar over assets (stderr).
        log: ``log(message)`` for row errors (default: print to stderr).
    """
    job = job or BatchJob()
    log = log or (lambda m: print(m, file=sys.stderr))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs, rows = plan_manifest(manifest, out, job, overrides, force)
    for spec in specs:
        if spec.error:
            log(f"batch: skipping invalid asset {spec.id!r}: {spec.error}")
    todo = [s for s in specs if s.row not in rows]
    order = [s.row for s in specs]
    write_summary(out, [rows[i] for i in order if i in rows])
    bar = _progress(len(specs), len(specs) - len(todo), progress)

    def on_done(spec: AssetSpec, outcome: dict, attempts) -> None:
        record = write_outcome(out, spec, outcome, attempts)
        rows[spec.row] = summary_row(spec, outcome["status"], record)
        if outcome["status"] != "ok":
            log(f"batch: asset {spec.id!r} {outcome['status']}: {outcome.get('error')}")
        write_summary(out, [rows[i] for i in order if i in rows])
        bar.set_postfix({s: n for s in ("ok", "failed", "crashed")
                         if (n := sum(r["status"] == s for r in rows.values()))}, refresh=False)
        bar.update(1)

    try:
        if ray_address is not None:
            from .ray_cluster import run_ray

            run_ray(todo, job, on_done, address=ray_address, num_cpus=num_cpus, num_gpus=num_gpus,
                    max_retries=max_retries)
        else:
            from .local import run_local

            run_local(todo, job, on_done, workers=workers, max_retries=max_retries, log=log)
    finally:
        bar.close()
    final = [rows[i] for i in order if i in rows]
    write_summary(out, final)
    return final
