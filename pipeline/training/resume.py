"""Resuming a training job where it stopped.

With a ``resume`` directory, the training loop keeps its whole state there every
``resume_every`` steps (``state.pt``: weights, optimizer, learning-rate schedule, EMA, log rows so
far and the generators' states), and a rerun with the same inputs continues from it, ending with
the same weights as an uninterrupted run. The stages keep it outside their outputs, under
``resume/`` (:func:`resume_dir`), and remove it once their output is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers.training_utils import EMAModel

from pipeline.artifacts import atomic_path
from pipeline.data.sets import row_blocks

logger = logging.getLogger(__name__)
STATE = "state.pt"
ATTEMPTS = "attempts.json"


def digest(*arrays: torch.Tensor | np.ndarray | None, key: dict | None = None) -> str:
    """sha256 of ``key`` (as JSON) and of each array's shape and values (``None`` too): a tensor's
    as float32, a numpy array's as stored, read block by block (a memory-mapped data set)."""
    h = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
    for a in arrays:
        h.update(b"none" if a is None else repr(tuple(a.shape)).encode())
        if isinstance(a, torch.Tensor):
            h.update(np.ascontiguousarray(a.detach().cpu().float().numpy()))
        elif a is not None:
            for block in row_blocks(a):
                h.update(np.ascontiguousarray(block))
    return h.hexdigest()


def resume_dir(out: str | Path) -> Path:
    """Where a stage writing ``out`` keeps its resumable state: ``resume/<out>`` under the working
    directory (the workflow's), outside every declared output, so that a killed job's rerun finds
    it (Snakemake deletes the incomplete output, not this). An ``out`` outside the working
    directory is named by its absolute path there."""
    out, cwd = Path(os.path.abspath(out)), Path.cwd()
    return cwd / "resume" / (out.relative_to(cwd) if out.is_relative_to(cwd) else out.relative_to(out.anchor))


def load_state(path: Path, key: str) -> dict | None:
    """The state saved at ``path`` if a run with fingerprint ``key`` saved it, else None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
        state = {"key": f"unreadable ({exc})"}
    if state["key"] != key:
        logger.warning("%s: saved by a run with other inputs or settings; starting afresh", path)
        return None
    return state


def save_state(path: Path, key: str, step: int, rows: list[dict], attempts: list[dict], net: torch.nn.Module,
               optimizer, schedule, ema: EMAModel | None) -> None:
    """Everything the loop needs to continue after ``step`` exactly as if never stopped, and the
    attempts so far (:mod:`pipeline.training.cost`), atomically."""
    state = {"key": key, "step": step, "rows": rows, "attempts": attempts, "net": net.state_dict(),
             "optimizer": optimizer.state_dict(),
             "schedule": schedule.state_dict(), "ema": None if ema is None else ema.state_dict(),
             "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def resume_from(resume: Path, key: str, net: torch.nn.Module, optimizer, schedule,
                ema: EMAModel | None) -> tuple[int, list[dict], list[dict]]:
    """Load the state a run with fingerprint ``key`` saved under ``resume`` into the loop's objects
    and torch's generators, and return its step, log rows and earlier attempts. Without one,
    return (0, [], []) and remove the directory (a stale state, a stale run's staged files) for a
    fresh start."""
    state = load_state(resume / STATE, key)
    if state is None:
        shutil.rmtree(resume, ignore_errors=True)
        return 0, [], []
    net.load_state_dict(state["net"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
        ema.to(next(net.parameters()).device)
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] is not None:  # the generator of the current device, the one the loop runs on
        torch.cuda.set_rng_state(state["cuda_rng"])
    logger.info("resumed from step %d (%s)", state["step"], resume)
    return state["step"], state["rows"], state["attempts"]


def save_attempts(resume: Path, attempts: list[dict]) -> None:
    """The attempts of a finished job, for its stage to read (:func:`load_attempts`)."""
    resume.mkdir(parents=True, exist_ok=True)
    with atomic_path(resume / ATTEMPTS) as tmp:
        tmp.write_text(json.dumps(attempts))


def load_attempts(resume: Path) -> list[dict]:
    """Every attempt of the job that just finished under ``resume`` (:func:`save_attempts`)."""
    return json.loads((Path(resume) / ATTEMPTS).read_text())
