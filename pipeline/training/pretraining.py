r"""The pretraining recipe: a fresh UNet2DModel trained with the DDPM loss on given rows of the
training set, keeping the EMA weights. On all of X it is the pretrained model; on the retain set
R = X \ A only, the retrained model, the reference every unlearning method is compared against
(methods.md 7). A text-to-image model's: :mod:`pipeline.training.text_to_image`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.diffusion.models import build_scheduler, build_unet, compute_settings, device, scheduler_settings
from pipeline.methods.losses import DDPMLoss
from pipeline.training.loop import BatchSource, optimizer_settings, train


def pretrain(params: dict, images: np.ndarray, rows: np.ndarray, log,
             resume: Path | None = None) -> tuple[torch.nn.Module, object, str]:
    """Train a fresh UNet on ``rows`` of ``images`` with the pretraining recipe, resumable from
    (and saving its state every ``compute.resume_every`` steps in) the ``resume`` directory."""
    cfg, compute = params["pretrain"], params["compute"]
    torch.manual_seed(cfg["seed"])
    unet = build_unet(params).to(device())
    scheduler = build_scheduler(params)
    n_params = sum(p.numel() for p in unet.parameters())
    log.info("UNet2DModel with %.2f M parameters, trained on %d images", n_params / 1e6, len(rows))
    unet, history = train(unet, DDPMLoss(scheduler), BatchSource(images, retain_rows=rows), steps=cfg["steps"],
                          batch_size=cfg["batch_size"], lr=cfg["lr"], **optimizer_settings(cfg), seed=cfg["seed"],
                          warmup_steps=cfg["warmup_steps"], ema_decay=cfg["ema_decay"],
                          **compute_settings(params), resume=resume, resume_every=compute["resume_every"],
                          resume_key={"objective": "ddpm", "scheduler": scheduler_settings(scheduler)},
                          desc="pretrain", log=log)
    return unet, scheduler, history
