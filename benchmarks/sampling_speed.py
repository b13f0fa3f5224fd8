"""Sampling throughput of the project's sampler against ``diffusers.DDPMPipeline``, side by side.

The same UNet (the params file's, seeded, or a saved DDPMPipeline with ``--model``; the speed
does not depend on the weights), scheduler, steps and batch: each measurement samples one batch.
Each round runs the pipeline (``output_type="np"``) and then every variant of
:func:`pipeline.diffusion.sampler.sample` once, so that drift of the machine hits all alike. Prints images
per second (median and range over rounds) and the ratio of the medians to the pipeline's, and
the largest difference between the pipeline's images and the fp32 sampler's (the same noise: 0
on the CPU). A variant whose ``torch.compile`` fails (no C++ compiler, no Triton) is reported
and left out.

    python benchmarks/sampling_speed.py [--params params.yaml] [--model DIR] [--steps S] [--batch B] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from diffusers import DDPMPipeline
from variants import VARIANTS as COMPUTE_VARIANTS
from variants import try_variants

from pipeline.diffusion.models import build_scheduler, build_unet, device, load_model
from pipeline.diffusion.sampler import sample, sample_generators
from pipeline.params.validation import load_params

VARIANTS = {"fp32": {}, **COMPUTE_VARIANTS}  # keyword arguments of pipeline.diffusion.sampler.sample


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def pipeline_images(pipe: DDPMPipeline, batch: int, steps: int) -> np.ndarray:
    out = pipe(batch_size=batch, generator=sample_generators(0, range(batch)), num_inference_steps=steps,
               output_type="np")
    return out.images.transpose(0, 3, 1, 2)


def timed(run) -> tuple[float, np.ndarray]:
    """Seconds ``run()`` takes (the GPU's queue drained before and after), and its images."""
    synchronize()
    start = time.perf_counter()
    images = run()
    synchronize()
    return time.perf_counter() - start, images


def warm_up(unet, scheduler, batch: int) -> tuple[dict[str, dict], dict[str, str]]:
    """Run each variant on one batch for 2 steps (kernels, allocator, compilation); return those
    that ran, and those that failed with the reason."""
    return try_variants(VARIANTS, lambda options: sample(unet, scheduler, batch, 2, batch, 0, **options))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", help="a saved DDPMPipeline directory (default: the params' UNet, seeded)")
    parser.add_argument("--steps", type=int, help="inference steps (default: sampling.steps)")
    parser.add_argument("--batch", type=int, help="images per batch (default: sampling.batch_size)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    params = load_params(args.params)
    steps, batch = args.steps or params["sampling"]["steps"], args.batch or params["sampling"]["batch_size"]
    torch.manual_seed(0)
    unet, scheduler = load_model(args.model) if args.model else (build_unet(params), build_scheduler(params))
    unet = unet.to(device()).eval()
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipeline_images(pipe, batch, 2)
    variants, failed = warm_up(unet, scheduler, batch)
    seconds = {name: [] for name in ["DDPMPipeline", *variants]}
    for _ in range(args.rounds):
        took, reference = timed(lambda: pipeline_images(pipe, batch, steps))
        seconds["DDPMPipeline"].append(took)
        for name, options in variants.items():
            took, images = timed(lambda: sample(unet, scheduler, batch, steps, batch, 0, **options))
            seconds[name].append(took)
            if name == "fp32":
                difference = np.abs(images - reference).max()
    base = batch / statistics.median(seconds["DDPMPipeline"])
    print(f"device: {device()}, torch {torch.__version__}, threads: {torch.get_num_threads()}; "
          f"{args.model or args.params} UNet, {steps} steps, batch {batch}, {args.rounds} rounds")
    print(f"{'sampler':<32} {'images/s':>9} {'min-max':>13} {'ratio to pipeline':>18}")
    for name, times in seconds.items():
        rate = batch / statistics.median(times)
        spread = f"{batch / max(times):.1f}-{batch / min(times):.1f}"
        print(f"{name:<32} {rate:>9.2f} {spread:>13} {rate / base:>18.2f}")
    for name, reason in failed.items():
        print(f"{name:<32} failed: {reason}")
    print(f"max |pipeline - fp32 sampler| over the images: {difference:.2e}")


if __name__ == "__main__":
    main()
