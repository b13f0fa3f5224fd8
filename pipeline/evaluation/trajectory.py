"""The trajectory of a run: forgetting and quality over the steps of an unlearning run.

For a run, each checkpoint that ``checkpoint_every`` left under ``checkpoints/step-NNNNNN/`` and
the final model; for the pretrained model, step 0 alone. Each gets ``metrics.trajectory.samples``
samples, drawn as the sample stage draws them (``sampling.steps``, the same seed, so every point
starts from the same noise), and the forget reproduction and quality of :mod:`pipeline.evaluation.metrics`.
The model itself is not sampled again: sample i depends only on the seed and i
(:func:`pipeline.diffusion.sampler.sample_generators`), so the first ``metrics.trajectory.samples``
of the sample stage's samples are its point.
The report draws these as report/steps.png and takes the deletion step from them: the first step
from which forget reproduction stays at or below ``metrics.trajectory.deleted_rate``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.diffusion.models import compute_settings, device, load_model
from pipeline.diffusion.sampler import sample
from pipeline.evaluation.metrics import evaluate_samples


def points(model_dir: Path) -> list[tuple[int, Path]]:
    """(step, model directory) of each checkpoint and the final model; step 0 for a model that
    was not unlearned (no ``unlearn.json``)."""
    summary = model_dir / "unlearn.json"
    if not summary.is_file():
        return [(0, model_dir)]
    checkpoints = sorted((model_dir / "checkpoints").glob("step-*"))
    final = json.loads(summary.read_text())["hyperparameters"]["steps"]
    return [(int(c.name.split("-")[1]), c) for c in checkpoints] + [(final, model_dir)]


def trajectory(params: dict, model_dir: Path, train: dict, forget: dict, classifier,
               final_samples: np.ndarray) -> list[dict]:
    """The rows of the trajectory; ``final_samples``: the sample stage's samples of the model."""
    cfg, n = params["sampling"], params["metrics"]["trajectory"]["samples"]
    rows = []
    for step, path in tqdm(points(model_dir), desc="checkpoints", unit="model"):
        if path == model_dir:
            samples = final_samples[:n]
        else:
            unet, scheduler = load_model(path)
            samples = sample(unet.to(device()).eval(), scheduler, n, cfg["steps"], cfg["batch_size"], cfg["seed"],
                             **compute_settings(params))
        result = evaluate_samples(params, samples, train, forget, classifier)
        rep = result["forget_reproduction"]
        rows.append({"step": step, "forget_reproduction_pct": round(100 * rep["rate"], 3),
                     "forget_reproduced": rep["count"], "n_samples": len(samples),
                     "fid": round(result["quality"]["fid"], 4)})
    return rows
