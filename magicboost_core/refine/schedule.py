"""Step schedules of the refinement loop (reference §5.2), scaled to the run length.

* Diffusion timestep range: ``min_step = int(1000 * 0.02) = 20``; ``max_step = int(1000 * p)`` with
  ``p`` linear from 0.5 at step 0 to 0.3 at step ``anneal_fraction * total`` (official: step 2000 of
  2500, i.e. 0.8) and 0.3 afterwards. One ``t ~ U{min_step .. max_step}`` (inclusive) per batch.
* Reconstruction / guidance alternation: even steps reconstruction, odd steps SDS.
* Anchor Iterative Update at ``start, start + every, ...`` (official 500, 1000, 1500, 2000 of 2500).
"""
from __future__ import annotations

import torch

from ..model.schedule import NUM_TRAIN_TIMESTEPS

__all__ = ["NUM_TRAIN_TIMESTEPS", "max_step_fraction", "timestep_range", "sample_timestep", "aiu_steps",
           "is_reconstruction_step", "pseudo_views_active"]


def max_step_fraction(step: int, total_steps: int, start: float = 0.5, end: float = 0.3,
                      anneal_fraction: float = 0.8) -> float:
    """threestudio ``C([0, start, end, anneal_steps])`` with ``anneal_steps = anneal_fraction * total``."""
    anneal_steps = max(1.0, anneal_fraction * total_steps)
    r = min(1.0, max(0.0, step / anneal_steps))
    return start + (end - start) * r


def timestep_range(step: int, total_steps: int, min_fraction: float = 0.02, start: float = 0.5,
                   end: float = 0.3, anneal_fraction: float = 0.8,
                   num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> tuple[int, int]:
    """(min_step, max_step) integer timesteps, both inclusive."""
    lo = int(num_train_timesteps * min_fraction)
    hi = int(num_train_timesteps * max_step_fraction(step, total_steps, start, end, anneal_fraction))
    return lo, max(lo, hi)


def sample_timestep(step: int, total_steps: int, generator: torch.Generator | None = None, **kw) -> int:
    """One timestep for the whole batch, uniform over ``timestep_range`` (inclusive)."""
    lo, hi = timestep_range(step, total_steps, **kw)
    return int(torch.randint(lo, hi + 1, (1,), generator=generator))


def aiu_steps(total_steps: int, start_fraction: float = 0.2, every_fraction: float = 0.2) -> list[int]:
    """Steps at which the Anchor Iterative Update runs: ``s >= start and (s - start) % every == 0``.

    ``start = round(start_fraction * total)``, ``every = max(1, round(every_fraction * total))``;
    official 2500 steps -> [500, 1000, 1500, 2000]. Step 0 is excluded (nothing refined yet).
    """
    start = max(1, int(round(start_fraction * total_steps)))
    every = max(1, int(round(every_fraction * total_steps)))
    return list(range(start, total_steps, every))


def is_reconstruction_step(step: int, mode: str = "alternate") -> bool:
    """``alternate``: even steps reconstruct the reference/pseudo views, odd steps run SDS."""
    if mode == "alternate":
        return step % 2 == 0
    return mode == "reference"


def pseudo_views_active(step: int, total_steps: int, start_fraction: float = 0.2,
                        end_fraction: float = 0.8) -> bool:
    """Official ``500 <= s <= 2000``: the window in which pseudo views may be sampled."""
    start = max(1, int(round(start_fraction * total_steps)))
    return start <= step <= int(round(end_fraction * total_steps))
