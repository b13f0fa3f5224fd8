"""What a training or unlearning job cost, over every attempt it took.

A job that is killed (preempted, out of time) and rerun continues from its resumable state
(:mod:`pipeline.training.resume`); each process that worked on it is an attempt. The state
carries the attempts so far, each updated when the state is saved, so the cost of a killed
attempt counts up to its last saved state (the steps after it are done again, and counted, by
the next attempt).
"""

from __future__ import annotations

import resource

import torch


def attempt(first_step: int, last_step: int, seconds: float) -> dict:
    """One process's share of a job: the steps it took (first_step, last_step], its wall time, and
    its peak memory so far: resident set size (data, model, optimizer, activations) and, on a GPU,
    the peak memory torch allocated there."""
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"first_step": first_step, "last_step": last_step, "wall_time_s": round(seconds, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_cuda_mib": None if cuda is None else round(cuda, 1)}


def cost_record(attempts: list[dict], steps: int) -> dict:
    """``cost.json``: the total wall time of every attempt, the optimizer steps, the peak memory of
    the most demanding attempt, and the attempts themselves."""
    cuda = [a["peak_cuda_mib"] for a in attempts if a["peak_cuda_mib"] is not None]
    return {"wall_time_s": round(sum(a["wall_time_s"] for a in attempts), 2), "steps": steps,
            "peak_rss_mib": max(a["peak_rss_mib"] for a in attempts), "peak_cuda_mib": max(cuda) if cuda else None,
            "attempts": attempts}
