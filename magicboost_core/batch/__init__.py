"""Batch refinement of many assets: ``magicboost batch MANIFEST --out DIR [--workers N | --ray [ADDRESS]]``.

* :mod:`.manifest` — CSV / JSONL manifest -> :class:`AssetSpec` (per-row errors, never fatal to the batch);
* :mod:`.plan` — resolved RefineConfig per asset and its config hash (config + inputs + model);
* :mod:`.adapter` — the only calls into the refinement code (model, config, refine), as ``magicboost refine``;
* :mod:`.asset` — worker side: one asset -> outcome (mesh bytes, metrics, error);
* :mod:`.local` — N spawned worker processes, dead-worker detection and retry (no extra dependency);
* :mod:`.ray_cluster` — one Ray task per asset (optional ``ray`` extra);
* :mod:`.outputs` — atomic per-asset results, resume, summary CSV / Markdown;
* :mod:`.runner` — :func:`run_batch`, tying them together; :mod:`.cli` — the command.
"""
from .asset import BatchJob, run_asset
from .manifest import AssetSpec, ManifestError, read_manifest
from .runner import plan_manifest, run_batch

__all__ = ["AssetSpec", "BatchJob", "ManifestError", "plan_manifest", "read_manifest", "run_asset", "run_batch"]
