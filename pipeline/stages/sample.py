"""Stage sample: ``sampling.n`` seeded samples from one model, by the DDPM ancestral sampler of
:mod:`pipeline.diffusion.sampler` (``sampling.steps`` steps, in batches of ``sampling.batch_size``,
each sample's noise from ``sampling.seed`` and its index), the UNet run as ``compute`` says.

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
