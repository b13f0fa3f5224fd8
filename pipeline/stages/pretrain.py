r"""Stage pretrain (and the gold standard, retrain): train a DDPM from scratch.

``pretrain`` trains a UNet2DModel with the DDPM loss on the whole training set X, forget images
included, and keeps the EMA weights; or, with ``model.source: pretrained``, loads a pretrained
DDPMPipeline from a Hub id or a local path instead. Given ``--forget``, the same recipe runs on
the retain set R = X \ A only: retraining from scratch, the reference every unlearning method is
compared against (methods.md 7). All end as a ``DDPMPipeline.save_pretrained`` directory; a
trained one also holds its ``train_log.csv`` and ``cost.json`` (every attempt's wall time and peak
memory, and the total: :func:`pipeline.training.cost.cost_record`).

Training keeps a resumable state every ``compute.resume_every`` steps under ``resume/<out>``
(:func:`pipeline.training.resume.resume_dir`): a killed job, rerun, continues from it to the same weights.
It is removed once the model is saved.
"""

from __future__ import annotations

import json
import shutil

import numpy as np

from pipeline.artifacts import setup_logging
from pipeline.data.sets import load_forget_set, load_training_set, retain_rows
from pipeline.diffusion.models import check_matches_data, load_model, save_model
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args
from pipeline.training.cost import cost_record
from pipeline.training.pretraining import pretrain
from pipeline.training.resume import load_attempts, resume_dir


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "data", "out", optional=("forget",))
    params = load_params(args.params)
    log = setup_logging(args.log)
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
    cost = cost_record(load_attempts(resume), params["pretrain"]["steps"])
    save_model(args.out, unet.cpu(), scheduler,
               {"train_log.csv": history, "cost.json": json.dumps(cost, indent=2) + "\n"})
    shutil.rmtree(resume, ignore_errors=True)
    log.info("trained in %.1f s (%d attempts), saved to %s", cost["wall_time_s"], len(cost["attempts"]), args.out)


if __name__ == "__main__":
    main()
