"""Stage unlearn_prompt: one run of one method with one seed on one memorized prompt, in latent space.

The run (``--run``, :func:`pipeline.params.runs.prompt_runs`: ``siss-s0-i2`` unlearns the third
prompt of the prompts file) starts from the text-to-image model ``--model``. Its forget set A is
the prompt's memorized generations and its retain set X the others (``--generations``, the
generate stage), as VAE latents; ReTrack's K = ``knn.k`` nearest latents of X to each forget
latent come from an exact faiss search (:func:`pipeline.training.prompts.prompt_source`). Every
loss term is conditioned on one text embedding, the modified prompt's, as the reference codes do
(:class:`pipeline.diffusion.text_to_image.Conditioned`). The UNet trains whole or through LoRA
adapters, with or without gradient checkpointing (``text_to_image``,
:func:`pipeline.training.prompts.trainable_unet`), through the one training loop with the
method's ``methods.<name>`` budget (accumulated micro-batches, ``compute.precision``).

Output: a ``StableDiffusionPipeline`` directory (LoRA: the merged weights, and the adapters in
``lora/``) with ``train_log.csv``, ``unlearn.json`` (method, seed, prompt, hyperparameters, wall
time), ``cost.json`` (wall time and peak memory, :func:`pipeline.training.cost.cost_record`) and,
with ``checkpoint_every: k``, the UNet (merged) under ``checkpoints/step-NNNNNN/`` every k steps,
staged under ``resume/<out>`` as the pixel-space unlearn stage does.
"""

from __future__ import annotations

import json
import shutil

import torch
from diffusers import DDPMScheduler

from pipeline.artifacts import load_npz, setup_logging
from pipeline.data.prompts import read_prompts
from pipeline.diffusion.models import compute_settings, device
from pipeline.diffusion.text_to_image import (
    Conditioned,
    load_text_to_image,
    merged_unet,
    prompt_embeddings,
    save_text_to_image,
)
from pipeline.errors import UserError
from pipeline.methods.contract import ForgetTermMethod
from pipeline.methods.registry import make_method
from pipeline.params.runs import Run, prompt_runs
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args
from pipeline.training.cost import cost_record
from pipeline.training.loop import optimizer_settings, train
from pipeline.training.prompts import prompt_source, trainable_unet
from pipeline.training.resume import load_attempts, resume_dir


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "run", "model", "generations", "out")
    params = load_params(args.params)
    prompts = read_prompts(params["text_to_image"]["prompts"])
    run = Run.parse(args.run)
    if run not in prompt_runs(params, len(prompts)):
        raise UserError(f"--run {args.run!r} is not a run of experiment (methods x seeds x the "
                        f"{len(prompts)} prompts)")
    prompt = prompts[run.image]
    log = setup_logging(args.log)
    generations = load_npz(args.generations, ("latents", "memorized"))
    memorized = generations["memorized"].astype(bool)
    source = prompt_source(generations["latents"][memorized], generations["latents"][~memorized], params["knn"]["k"])
    pipe = load_text_to_image(args.model).to(device())
    cfg = run.hyperparameters(params)
    method = make_method(run.method, cfg, DDPMScheduler.from_config(pipe.scheduler.config))
    torch.manual_seed(run.seed)  # LoRA's A matrices are drawn when the adapters are added
    unet = trainable_unet(pipe, params["text_to_image"])
    net = Conditioned(unet, prompt_embeddings(pipe, [prompt.modified])[0])
    resume = resume_dir(args.out)
    staged = resume / "checkpoints"

    def checkpoint(step, conditioned):
        merged_unet(conditioned.unet).save_pretrained(staged / f"step-{step:06d}", safe_serialization=True)

    key = {"run": run.name, "prompt": prompt.modified, "hyperparameters": cfg,
           **{k: params["text_to_image"][k] for k in ("train", "lora", "gradient_checkpointing")}}
    net, history = train(net, method, source, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                         **optimizer_settings(cfg), seed=run.seed, accumulate=cfg.get("accumulate", 1),
                         **compute_settings(params), checkpoint_every=cfg.get("checkpoint_every", 0),
                         on_checkpoint=checkpoint, resume=resume, resume_every=params["compute"]["resume_every"],
                         resume_key=key, desc=run.name, log=log)
    cost = cost_record(load_attempts(resume), cfg["steps"])
    summary = {"run": run.name, "method": run.method, "seed": run.seed, "prompt": prompt.name,
               "caption": prompt.caption, "modified": prompt.modified, "forget_generations": int(memorized.sum()),
               "retain_generations": int((~memorized).sum()), "hyperparameters": cfg,
               "train": params["text_to_image"]["train"], "lora": params["text_to_image"]["lora"],
               "gradient_checkpointing": params["text_to_image"]["gradient_checkpointing"],
               "forget_filter": method.forget_filter.describe() if isinstance(method, ForgetTermMethod) else None,
               "trainable_parameters": sum(p.numel() for p in unet.parameters() if p.requires_grad),
               "wall_time_s": cost["wall_time_s"]}
    unet.disable_gradient_checkpointing()
    pipe.unet = net.unet.requires_grad_(False).eval()
    save_text_to_image(pipe.to(torch.device("cpu")), args.out,
                       {"train_log.csv": history, "unlearn.json": json.dumps(summary, indent=2) + "\n",
                        "cost.json": json.dumps(cost, indent=2) + "\n", "checkpoints": staged})
    shutil.rmtree(resume, ignore_errors=True)
    log.info("%s (%s): %d steps in %.1f s", run.name, prompt.name, cfg["steps"], cost["wall_time_s"])


if __name__ == "__main__":
    main()
