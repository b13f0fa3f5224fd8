"""Stage 6, sample: N seeded samples from one model.

DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with ``sampling.steps`` inference steps
of the model's own DDPMScheduler (50 for MNIST in the SISS/ReTrack protocol), in batches. The
initial noise and every ancestral step's noise come from one generator seeded with
``sampling.seed``, so all models start from the same noise and their samples pair up. The UNet's
forward passes run in ``compute.precision`` (bf16: under bfloat16 autocast; the scheduler's
update stays in float32).

Output: ``<model>.npz`` with ``samples`` float32 (N, C, H, W) in [0, 1], and a PNG grid of the
first 100.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from diffusers import DDPMScheduler
from tqdm import tqdm

from pipeline.artifacts import load_npz, save_npz, setup_logging
from pipeline.config import cli, load_params, stage_args
from pipeline.images import grid, save_png
from pipeline.models import autocast, device, load_model


@torch.no_grad()
def sample(unet, scheduler: DDPMScheduler, n: int, steps: int, batch_size: int, seed: int,
           precision: str = "fp32") -> np.ndarray:
    """``n`` samples in [0, 1], shape (n, C, H, W); the UNet in ``precision`` (fp32 or bf16)."""
    scheduler = DDPMScheduler.from_config(scheduler.config)
    scheduler.set_timesteps(steps)
    dev = next(unet.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    size = unet.config.sample_size
    shape = (unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
    out = []
    bar = tqdm(total=n * steps, desc="sample", unit="img-step", mininterval=5)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.randn((b, *shape), generator=generator).to(dev)
        for t in scheduler.timesteps:
            with autocast(precision, dev):
                eps = unet(x, t.to(dev).expand(b)).sample
            x = scheduler.step(eps.float(), t, x, generator=generator).prev_sample
            bar.update(b)
        out.append(((x.clamp(-1, 1) + 1) / 2).cpu().numpy())
    bar.close()
    return np.concatenate(out).astype(np.float32)


def load_samples(path) -> np.ndarray:
    return load_npz(path, ("samples",))["samples"]


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
                     params["compute"]["precision"])
    save_npz(args.out, samples=samples)
    save_png(args.png, grid(samples[:100], ncols=10), scale=3)
    log.info("%d samples from %s in %.1f s", len(samples), args.model, time.time() - start)


if __name__ == "__main__":
    main()
