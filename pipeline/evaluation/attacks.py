"""Relearning attacks: does a little fine-tuning bring a forgotten image back?

Fine-tuning-based unlearning can hide an image rather than remove it: a short relearning on data
that does not contain it may make the model produce it again. Each attack fine-tunes a model
with the DDPM loss for ``attack.steps`` steps (``batch_size``, ``lr``, AdamW ``betas``,
``weight_decay``, ``eps``, ``seed``) on

- ``retain``: the retain set, benign fine-tuning that any later training would do;
- ``neighbours``: only the K nearest retain images of the forget images (the knn stage's), the
  data most likely to pull the model back towards them;

and then measures the forget set again: the share of ``attack.samples`` samples (drawn as the
sample stage draws them, same seed) within the reproduction threshold of each forget image, each
image's NLL, and the t = 250 probe's pixel L2, with the settings of ``metrics``. A model that
truly forgot behaves as the retrained model does under the same attack.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.data.sets import retain_rows
from pipeline.diffusion.images import to_float
from pipeline.diffusion.models import compute_settings
from pipeline.diffusion.sampler import sample
from pipeline.evaluation.likelihood import ProbabilityFlowNLL
from pipeline.evaluation.memorization import nearest_retain_distance, reproduction, thresholds
from pipeline.evaluation.probes import reconstruct
from pipeline.methods.losses import DDPMLoss
from pipeline.training.loop import BatchSource, optimizer_settings, train

KINDS = ("retain", "neighbours")


def attack_rows(kind: str, n: int, forget: dict, knn: dict) -> np.ndarray:
    """The rows of X an attack fine-tunes on: the retain set, or the forget images' neighbours."""
    if kind == "retain":
        return retain_rows(n, forget["rows"])
    return np.unique(knn["neighbours"].ravel())


def relearn(unet, scheduler, images: np.ndarray, rows: np.ndarray, params: dict):
    """``unet`` fine-tuned with the DDPM loss on ``rows`` of ``images`` (``attack`` in params)."""
    cfg = params["attack"]
    unet, _ = train(unet, DDPMLoss(scheduler), BatchSource(images, retain_rows=rows), steps=cfg["steps"],
                    batch_size=cfg["batch_size"], lr=cfg["lr"], **optimizer_settings(cfg), seed=cfg["seed"],
                    **compute_settings(params), desc="relearn")
    return unet


def forget_figures(params: dict, unet, scheduler, train_set: dict, forget: dict) -> list[dict]:
    """Per distinct forget image: the share of samples reproducing it, its NLL (bits/dim) and the
    probe's pixel L2, as the metrics stage defines them."""
    cfg, images = params["metrics"], train_set["images"]
    samples = sample(unet, scheduler, params["attack"]["samples"], params["sampling"]["steps"],
                     params["sampling"]["batch_size"], params["sampling"]["seed"], **compute_settings(params))
    originals = torch.from_numpy(to_float(images[forget["distinct"]]))
    tau, _ = thresholds(cfg["threshold"], nearest_retain_distance(images, forget))
    reproduced = reproduction(samples, originals.numpy(), tau)["per_image_count"]
    x = originals * 2 - 1
    nll = ProbabilityFlowNLL(**{k: cfg["nll"][k] for k in ("rtol", "atol", "eps", "seed")})(unet, scheduler, x)
    _, recon = reconstruct(unet, scheduler, x, **cfg["probe"])
    pixel_l2 = ((recon + 1) / 2 - originals[:, None]).flatten(2).norm(dim=2).mean(1)
    return [{"row": int(row), "reproduction": count / len(samples), "nll_bits_per_dim": float(b),
             "probe_pixel_l2": float(d)}
            for row, count, b, d in zip(forget["distinct"], reproduced, nll["bits_per_dim"], pixel_l2)]
