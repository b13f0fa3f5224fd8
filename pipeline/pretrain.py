"""Stage 2, pretrain (and the gold standard, retrain): train a DDPM from scratch.

``pretrain`` trains a UNet2DModel with the DDPM loss on the whole training set X, forget images
included, and keeps the EMA weights; or, with ``model.source: pretrained``, loads a pretrained
DDPMPipeline from a Hub id or a local path instead. Given ``--forget``, the same recipe runs on
the retain set R = X \\ A only: retraining from scratch, the reference every unlearning method is
compared against (methods.md 7). All end as a ``DDPMPipeline.save_pretrained`` directory; a
trained one also holds its ``train_log.csv`` and ``cost.json`` (:func:`pipeline.models.cost_record`).

Training keeps a resumable state every ``compute.resume_every`` steps under ``resume/<out>``
(:func:`pipeline.training.resume_dir`): a killed job, rerun, continues from it to the same weights.
It is removed once the model is saved.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.artifacts import setup_logging
from pipeline.config import cli, load_params, stage_args
from pipeline.data import load_forget_set, load_training_set, retain_rows
from pipeline.methods import DDPMLoss
from pipeline.models import (
    build_scheduler,
    build_unet,
    check_matches_data,
    compute_settings,
    cost_record,
    device,
    load_model,
    save_model,
    scheduler_settings,
)
from pipeline.training import BatchSource, resume_dir, train


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
                          batch_size=cfg["batch_size"], lr=cfg["lr"], seed=cfg["seed"],
                          warmup_steps=cfg["warmup_steps"], ema_decay=cfg["ema_decay"],
                          **compute_settings(params), resume=resume, resume_every=compute["resume_every"],
                          resume_key={"objective": "ddpm", "scheduler": scheduler_settings(scheduler)},
                          desc="pretrain", log=log)
    return unet, scheduler, history


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "data", "out", optional=("forget",))
    params = load_params(args.params)
    log = setup_logging(args.log)
    start = time.time()
    if params["model"]["source"] == "pretrained" and not args.forget:
        source = params["model"]["pretrained"]
        unet, scheduler = load_model(source)
        check_matches_data(unet, params, source)
        save_model(args.out, unet, scheduler)
        log.info("copied pretrained model %s to %s", source, args.out)
        return
    images = load_training_set(args.data)["images"]
    rows = retain_rows(len(images), load_forget_set(args.forget)["rows"]) if args.forget else np.arange(len(images))
    resume = resume_dir(args.out)
    unet, scheduler, history = pretrain(params, images, rows, log, resume)
    cost = cost_record(time.time() - start, params["pretrain"]["steps"])
    save_model(args.out, unet.cpu(), scheduler,
               {"train_log.csv": history, "cost.json": json.dumps(cost, indent=2) + "\n"})
    shutil.rmtree(resume, ignore_errors=True)
    log.info("trained in %.1f s, saved to %s", time.time() - start, args.out)


if __name__ == "__main__":
    main()
