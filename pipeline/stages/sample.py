"""Stage sample: N seeded samples from one model.

DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with ``sampling.steps`` inference steps
of the model's own DDPMScheduler (50 for MNIST in the SISS/ReTrack protocol), in batches. The
initial noise and every ancestral step's noise come from one generator seeded with
``sampling.seed``, so all models start from the same noise and their samples pair up. The update
is ``DDPMScheduler.step``'s, its coefficients computed once per run (:func:`ancestral_steps`),
and draws its noise in ``DDPMPipeline``'s order: one batch gives the pipeline's images. How the
UNet runs comes from ``compute`` (:func:`pipeline.diffusion.models.compute_settings`): ``precision`` (bf16:
its forward passes under bfloat16 autocast; the update stays in float32), ``channels_last`` and
``compile`` (:func:`pipeline.diffusion.models.prepare`).

Output: ``<model>.npz`` with ``samples`` float32 (N, C, H, W) in [0, 1], and a PNG grid of the
first 100.
"""

from __future__ import annotations

import time

from pipeline.artifacts import save_npz, setup_logging
from pipeline.diffusion.images import grid, save_png
from pipeline.diffusion.models import compute_settings, device, load_model
from pipeline.diffusion.sampler import sample
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "model", "out", "png")
    params = load_params(args.params)
    cfg = params["sampling"]
    log = setup_logging(args.log)
    unet, scheduler = load_model(args.model)
    unet = unet.to(device()).eval()
    start = time.time()
    samples = sample(unet, scheduler, cfg["n"], cfg["steps"], cfg["batch_size"], cfg["seed"],
                     **compute_settings(params))
    save_npz(args.out, samples=samples)
    save_png(args.png, grid(samples[:100], ncols=10), scale=3)
    log.info("%d samples from %s in %.1f s", len(samples), args.model, time.time() - start)


if __name__ == "__main__":
    main()
