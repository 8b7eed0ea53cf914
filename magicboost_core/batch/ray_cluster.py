"""Ray mode: one Ray task per asset, on a local Ray instance or an existing cluster.

``address``: ``"local"`` (or None) starts a private Ray instance on this machine (or joins the one
``RAY_ADDRESS`` names); ``"auto"`` joins the cluster started with ``ray start --head`` on this
machine; ``"HOST:PORT"`` / ``"ray://HOST:10001"`` a remote one. When Ray is already initialised in
this process it is used as it is (and left running).

Each task requests ``num_cpus`` CPUs and ``num_gpus`` GPUs (fractions allowed: 0.5 puts two assets on
one GPU). A task whose worker process dies (node lost, killed, out of memory) is re-run by Ray up to
``max_retries`` times; an exception inside the asset is not retried (it is the asset's fault and
becomes a ``failed`` row). Results are collected with ``ray.wait`` as they finish, in any order.
Workers read the input files by their paths (same machine or a shared filesystem) and send the
refined mesh back as bytes: the output folder lives on the driver only. The package must be
installed on every node (``pip install magicboost[ray]``).
"""
from __future__ import annotations

from .asset import BatchJob, run_asset
from .local import crashed_outcome
from .manifest import AssetSpec

__all__ = ["run_ray", "import_ray"]


def import_ray():
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("--ray needs the optional Ray dependency: pip install 'magicboost[ray]' "
                          f"(or pip install ray) on the driver and on every node ({e}).") from None
    return ray


def _ray_asset(spec: AssetSpec, job: BatchJob) -> dict:
    """Body of one Ray task (module level so that workers import it instead of unpickling code)."""
    return run_asset(spec, job)


def _check_resources(available: dict, num_cpus: float, num_gpus: float) -> None:
    """Refuse requests the cluster can never grant (the tasks would wait forever)."""
    if num_gpus > 0 and available.get("GPU", 0) < num_gpus:
        raise ValueError(f"--gpus-per-asset {num_gpus}: the Ray cluster has {available.get('GPU', 0)} GPUs; start the "
                         "nodes with GPUs (ray start --num-gpus N) or use --gpus-per-asset 0 for CPU.")
    if num_cpus > available.get("CPU", 0):
        raise ValueError(f"--cpus-per-asset {num_cpus}: the Ray cluster has only {available.get('CPU', 0)} CPUs.")


def run_ray(specs: list[AssetSpec], job: BatchJob, on_done, address: str | None = "local", num_cpus: float = 1,
            num_gpus: float = 0, max_retries: int = 2) -> None:
    """Refine ``specs`` as Ray tasks; ``on_done(spec, outcome, attempts)`` in the driver as each finishes
    (``attempts`` is None: Ray retries dead workers itself and does not say how often)."""
    if num_cpus < 0 or num_gpus < 0 or max_retries < 0:
        raise ValueError(f"num_cpus, num_gpus and max_retries must be >= 0; got {num_cpus}, {num_gpus}, {max_retries}.")
    if not specs:
        return
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=None if address in (None, "", "local") else address, logging_level="WARNING")
        started = True
    refs: dict = {}
    try:
        _check_resources(ray.cluster_resources(), num_cpus, num_gpus)
        task = ray.remote(_ray_asset)
        options = dict(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=False)
        for spec in specs:
            refs[task.options(name=f"magicboost-batch:{spec.id}", **options).remote(spec, job)] = spec
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                spec = refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # raised outside run_asset, e.g. an import on the node
                    outcome = crashed_outcome(spec, f"Ray task error: {e}".splitlines()[0], status="failed")
                except ray.exceptions.RayError as e:
                    reason = f"Ray task lost after {max_retries + 1} tries: {type(e).__name__}: {e}".splitlines()[0]
                    outcome = crashed_outcome(spec, reason)
                on_done(spec, outcome, None)
    finally:
        for ref in refs:  # interrupted: do not leave work running on the cluster
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
