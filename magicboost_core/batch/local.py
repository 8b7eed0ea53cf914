"""Local mode: N worker processes (``multiprocessing`` spawn), no dependency beyond the package.

Each worker is a spawned process that loads the model once and then refines the assets it is sent,
one at a time, over its own pipe; the driver keeps every worker busy while assets are waiting. A
worker that dies (killed, segfault, out of memory) is noticed through its process sentinel: the
asset it held is sent again to a fresh worker, up to ``max_retries`` times, then reported as
``crashed``; the other assets go on. ``workers=0`` runs the assets in this process (no isolation;
for debugging).

``on_done(spec, outcome, attempts)`` is called in the driver as each asset finishes.
"""
from __future__ import annotations

import multiprocessing as mp
from collections import deque
from multiprocessing.connection import wait

from .asset import BatchJob, run_asset
from .manifest import AssetSpec

__all__ = ["run_local", "crashed_outcome"]


def crashed_outcome(spec: AssetSpec, reason: str, status: str = "crashed") -> dict:
    """The outcome of an asset whose worker died on every try (or that failed outside ``run_asset``)."""
    return {"id": spec.id, "status": status, "error": reason, "seconds": 0.0, "metrics": {}, "glb": None,
            "log": []}


def _worker_main(conn, job: BatchJob) -> None:
    """Worker process: load the model, then ``run_asset`` for every spec received until ``None``."""
    import signal

    import torch

    from .asset import _device, _model

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it ends the workers itself
    torch.set_num_threads(max(1, int(job.threads)))
    try:
        _model(job.model, _device(job))
    except Exception:  # noqa: BLE001 - reported by the first asset, which tries again
        pass
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        conn.send(run_asset(spec, job))


class _Worker:
    """One spawned worker process, its pipe and the (spec, attempt) it is refining."""

    def __init__(self, ctx, job: BatchJob, index: int):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, job), daemon=True,
                                   name=f"magicboost-batch-{index}")
        self.process.start()
        child.close()
        self.task: tuple[AssetSpec, int] | None = None

    def assign(self, spec: AssetSpec, attempt: int) -> bool:
        self.task = (spec, attempt)
        try:
            self.conn.send(spec)
            return True
        except (BrokenPipeError, OSError):
            return False

    def receive(self):
        """The outcome when one arrived; None when the worker died (or nothing is there yet)."""
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            pass
        return None

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        self.conn.close()


def _in_process(specs, job: BatchJob, on_done) -> None:
    for spec in specs:
        on_done(spec, run_asset(spec, job), 1)


def run_local(specs: list[AssetSpec], job: BatchJob, on_done, workers: int = 1, max_retries: int = 2,
              log=None) -> None:
    """Refine ``specs`` on ``workers`` spawned processes (0 = in this process); see the module docstring.
    ``log(message)`` hears about dead workers and retries."""
    if workers < 0 or max_retries < 0:
        raise ValueError(f"workers and max_retries must be >= 0; got {workers}, {max_retries}.")
    if workers == 0:
        return _in_process(specs, job, on_done)
    ctx = mp.get_context("spawn")
    pending = deque((spec, 1) for spec in specs)
    pool: list[_Worker] = []
    started = 0
    try:
        while pending or any(w.task for w in pool):
            for w in pool:
                if w.task is None and pending:
                    w.assign(*pending.popleft())
            while pending and len(pool) < workers:
                w = _Worker(ctx, job, started)
                started += 1
                pool.append(w)
                w.assign(*pending.popleft())
            busy = [w for w in pool if w.task]
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for w in busy:
                if w.conn not in ready and w.process.sentinel not in ready:
                    continue
                outcome = w.receive()
                spec, attempt = w.task
                if outcome is not None:
                    w.task = None
                    on_done(spec, outcome, attempt)
                    continue
                w.process.join(5.0)
                if w.process.is_alive():  # readable but empty: not dead after all
                    continue
                pool.remove(w)
                w.conn.close()
                reason = f"worker process died (exit code {w.process.exitcode}) on try {attempt} of {max_retries + 1}"
                if attempt <= max_retries:
                    if log:
                        log(f"batch: asset {spec.id!r}: {reason}; retrying on a fresh worker")
                    pending.appendleft((spec, attempt + 1))
                else:
                    on_done(spec, crashed_outcome(spec, reason), attempt)
    except BaseException:  # Ctrl-C or a failing on_done: end the workers now; their assets stay unfinished
        for w in pool:
            w.process.terminate()
        raise
    finally:
        for w in pool:
            w.stop()
