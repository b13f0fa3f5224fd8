"""Stage pretrain_text_to_image: the starting text-to-image model (``model.kind: text_to_image``).

A ``StableDiffusionPipeline`` directory: loaded from ``model.pretrained`` (a Hub id such as
CompVis/stable-diffusion-v1-4, or a local directory; safetensors only,
:func:`pipeline.diffusion.text_to_image.load_text_to_image`) or, offline (``model.source:
train``), trained here on the training set ``--data`` and its captions
(:mod:`pipeline.data.captions`, :func:`pipeline.training.text_to_image.pretrain_text_to_image`), with
``train_log_vae.csv``, ``train_log.csv`` (the UNet's) and ``cost.json``. Training keeps resumable
states under ``resume/<out>/vae`` and ``resume/<out>/unet``, removed once the model is saved.
"""

from __future__ import annotations

import json
import shutil

from pipeline.artifacts import setup_logging
from pipeline.data.captions import caption_table, row_captions
from pipeline.data.sets import load_training_set
from pipeline.diffusion.text_to_image import load_text_to_image, save_text_to_image
from pipeline.errors import UserError
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args
from pipeline.training.cost import cost_record
from pipeline.training.resume import load_attempts, resume_dir
from pipeline.training.text_to_image import pretrain_text_to_image


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "out", optional=("data",))
    params = load_params(args.params)
    log = setup_logging(args.log)
    if params["model"]["source"] == "pretrained":
        save_text_to_image(load_text_to_image(params["model"]["pretrained"]), args.out)
        log.info("copied text-to-image model %s to %s", params["model"]["pretrained"], args.out)
        return
    if not args.data:
        raise UserError("--data: the training set is required to train a model (model.source: train)")
    train_set, cfg = load_training_set(args.data), params["text_to_image"]["captions"]
    rows = row_captions(train_set["labels"], train_set["injected"], cfg, params["data"]["seed"])
    resume = resume_dir(args.out)
    pipe, vae_log, unet_log = pretrain_text_to_image(params, train_set["images"], caption_table(cfg), rows, log,
                                                     resume)
    cost = cost_record(load_attempts(resume / "vae") + load_attempts(resume / "unet"),
                       params["text_to_image"]["pretrain"]["unet"]["steps"])
    save_text_to_image(pipe, args.out, {"train_log_vae.csv": vae_log, "train_log.csv": unet_log,
                                        "cost.json": json.dumps(cost, indent=2) + "\n"})
    shutil.rmtree(resume, ignore_errors=True)
    log.info("trained in %.1f s, saved to %s", cost["wall_time_s"], args.out)


if __name__ == "__main__":
    main()
