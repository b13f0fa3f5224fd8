"""Stage unlearn: one run of one method with one seed, from the pretrained model (``--model``).

The run is named as its model directory (:class:`pipeline.params.runs.Run`: ``retrack-s0``, a cell
of the time/frequency sweep, ``retrack+t250-750+r4-s0``, with ``experiment.per_image`` a run
that unlearns forget image 3 alone, ``retrack-s0-i3``: its forget set is that image's copies and its
retain set everything else, :func:`pipeline.data.sets.forget_of`; or with ``experiment.requests``
the step that unlearns the second request, ``retrack-s0-q2``, from ``retrack-s0-q1``'s model
(``--model``): its forget set is that request's images, its retain set X without the images of
that request and of every earlier one, :func:`pipeline.data.sets.unlearned_by`). The method
(``pipeline.methods.registry.REGISTRY``) and its hyperparameters come from ``methods.<name>`` in params,
a sweep cell's time window and radius replacing its ``time`` and ``frequency``; every run goes
through the one training loop of
:mod:`pipeline.training.loop` and keeps its final weights (no EMA). Output: a DDPMPipeline directory
with the per-step log ``train_log.csv``, ``unlearn.json`` (method, seed, hyperparameters, wall time),
``cost.json`` (every attempt's wall time and peak memory, and the total:
:func:`pipeline.training.cost.cost_record`) and, with
``checkpoint_every: k``, a DDPMPipeline under ``checkpoints/step-NNNNNN/`` every k steps.

Resuming: the run keeps a resumable state every ``compute.resume_every`` steps under
``resume/<out>`` (:func:`pipeline.training.resume.resume_dir`), outside the output, and writes its
checkpoints there too (``resume/<out>/checkpoints/``), so that a killed job's rerun, continuing from
the last state, still has the checkpoints taken before it (each is saved before the state of its
step). They are moved into the output when it is written, and the directory is then removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.artifacts import atomic_path, setup_logging
from pipeline.data.sets import deleted_rows, load_forget_set, load_knn, load_training_set, retain_rows, unlearned_by
from pipeline.diffusion.models import (
    check_matches_data,
    compute_settings,
    device,
    load_model,
    scheduler_settings,
    write_model,
)
from pipeline.errors import UserError
from pipeline.methods.contract import ForgetTermMethod
from pipeline.methods.registry import make_method
from pipeline.params.runs import Run, runs
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args
from pipeline.training.cost import cost_record
from pipeline.training.loop import BatchSource, optimizer_settings, train
from pipeline.training.resume import load_attempts, resume_dir


def save_run(path: str, unet, scheduler, staged: Path, files: dict[str, str]) -> None:
    """The run's output directory, atomically: the model with its ``files`` and the checkpoints
    staged under the resume directory, moved in last (after the likelier failures of writing)."""
    with atomic_path(path, directory=True) as out:
        write_model(out, unet, scheduler, files)
        if staged.is_dir():
            shutil.move(staged, out / "checkpoints")


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "run", "data", "forget", "knn", "model", "out")
    params = load_params(args.params)
    run = Run.parse(args.run)
    if run not in runs(params):
        raise UserError(f"--run {args.run!r} is not a run of experiment (methods x seeds, a cell of its sweep, "
                        "or a step of its requests)")
    log = setup_logging(args.log)
    images = load_training_set(args.data)["images"]
    every = load_forget_set(args.forget)
    forget, knn = unlearned_by(run, every, load_knn(args.knn))
    unet, scheduler = load_model(args.model)
    check_matches_data(unet, params, args.model)
    cfg = run.hyperparameters(params)
    method = make_method(run.method, cfg, scheduler)
    source = BatchSource(images, retain_rows(len(images), deleted_rows(run, every)), forget["rows"], forget["group"],
                         knn["neighbours"])
    resume, compute = resume_dir(args.out), params["compute"]
    staged = resume / "checkpoints"
    key = {"run": run.name, "hyperparameters": cfg, "scheduler": scheduler_settings(scheduler)}

    def checkpoint(step, net):
        write_model(staged / f"step-{step:06d}", net, scheduler)

    unet, history = train(unet.to(device()), method, source, steps=cfg["steps"], batch_size=cfg["batch_size"],
                          lr=cfg["lr"], **optimizer_settings(cfg), seed=run.seed, accumulate=cfg.get("accumulate", 1),
                          **compute_settings(params), checkpoint_every=cfg.get("checkpoint_every", 0),
                          on_checkpoint=checkpoint, resume=resume, resume_every=compute["resume_every"],
                          resume_key=key, desc=run.name, log=log)
    cost = cost_record(load_attempts(resume), cfg["steps"])
    summary = {"run": run.name, "method": run.method, "seed": run.seed, "image": run.image,
               "request": run.request, "started_from": args.model,
               "forget_rows": forget["rows"].tolist(), "hyperparameters": cfg,
               "forget_filter": method.forget_filter.describe() if isinstance(method, ForgetTermMethod) else None,
               "wall_time_s": cost["wall_time_s"]}
    save_run(args.out, unet.cpu(), scheduler, staged,
             {"train_log.csv": history, "unlearn.json": json.dumps(summary, indent=2) + "\n",
              "cost.json": json.dumps(cost, indent=2) + "\n"})
    shutil.rmtree(resume, ignore_errors=True)
    log.info("%s: %d steps in %.1f s (%d attempts)", run.name, cfg["steps"], cost["wall_time_s"], len(cost["attempts"]))


if __name__ == "__main__":
    main()
