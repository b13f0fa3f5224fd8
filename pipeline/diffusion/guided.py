"""The text-to-image sampler: seeded generations of prompts with classifier-free guidance.

Classifier-free guidance (Ho & Salimans 2022) moves each step's noise prediction away from the
unconditional one: eps = eps_theta(z_t, t, c_empty) + w (eps_theta(z_t, t, c) - eps_theta(z_t,
t, c_empty)), w = ``guidance`` (7.5 in the Stable Diffusion protocols), c_empty the embedding of
the empty prompt; both predictions come from one UNet call on the doubled batch. The update is
the scheduler's own ``step`` (DDIM, Song et al. 2021, eta = 0: deterministic given z_T; or DDPM
ancestral sampling), built from the model's schedule, with ``steps`` inference steps.

Generation i draws its z_T, and each DDPM step's noise, from its own generator seeded from
(``seed``, i) (:func:`pipeline.diffusion.sampler.sample_generators`), in the order
``StableDiffusionPipeline`` draws them from a list of generators: given the same generators,
scheduler and guidance, the pipeline gives the same images. Unlike the pipeline, it runs any
number of prompts in batches, keeps each generation's final latent beside its image, and runs
the UNet under ``precision``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline
from tqdm import tqdm

from pipeline.diffusion.models import autocast
from pipeline.diffusion.sampler import normal, sample_generators
from pipeline.diffusion.text_to_image import decode_latents, prompt_embeddings
from pipeline.errors import UserError

SCHEDULERS = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}


@dataclass
class Generations:
    """Images in [0, 1] (N, C, H, W) float32 and the final latents z_0 (N, c, h, w) they decode from."""

    images: np.ndarray
    latents: np.ndarray


def inference_scheduler(pipe: StableDiffusionPipeline, kind: str, steps: int):
    """A ``kind`` scheduler (``ddim`` or ``ddpm``) on the model's training schedule, set to
    ``steps`` steps, without clipping the predicted z_0 (latents are not bounded to [-1, 1];
    ``StableDiffusionPipeline`` turns the clipping off too)."""
    if kind not in SCHEDULERS:
        raise UserError(f"scheduler {kind!r}: expected one of {sorted(SCHEDULERS)}")
    scheduler = SCHEDULERS[kind].from_config(pipe.scheduler.config, clip_sample=False)
    scheduler.set_timesteps(steps)
    return scheduler


def generate(pipe: StableDiffusionPipeline, prompts: list[str], seed: int, steps: int = 50, guidance: float = 7.5,
             scheduler: str = "ddim", batch_size: int = 8, precision: str = "fp32", first: int = 0) -> Generations:
    """One generation per entry of ``prompts`` (repeat a prompt for several), generation i seeded
    from (``seed``, ``first`` + i), ``batch_size`` at a time, on the UNet's device (module doc)."""
    unet, vae = pipe.unet, pipe.vae
    dev = unet.device
    size = unet.config.sample_size
    shape = (unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
    sched = inference_scheduler(pipe, scheduler, steps)
    empty = prompt_embeddings(pipe, [""]).to(dev)
    images, latents = [], []
    bar = tqdm(total=len(prompts) * steps, desc="generate", unit="img-step", mininterval=5)
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        generators = sample_generators(seed, range(first + start, first + start + len(batch)))
        text = torch.cat([empty.expand(len(batch), -1, -1), prompt_embeddings(pipe, batch).to(dev)])
        z = normal((len(batch), *shape), generators, dev) * sched.init_noise_sigma
        with torch.inference_mode():
            for t in sched.timesteps:
                z = guided_step(unet, sched, z, t, text, guidance, generators, precision)
                bar.update(len(batch))
            latents.append(z.float().cpu())
            images.append(decode_latents(vae, z).cpu())
    bar.close()
    return Generations(torch.cat(images).numpy(), torch.cat(latents).numpy())


def guided_step(unet, sched, z: torch.Tensor, t: torch.Tensor, text: torch.Tensor, guidance: float,
                generators: list[torch.Generator], precision: str) -> torch.Tensor:
    """z_t -> z_t' with the guided prediction; ``text`` stacks the empty and the prompts' embeddings."""
    z_in = sched.scale_model_input(torch.cat([z, z]), t)
    with autocast(precision, z.device):
        eps = unet(z_in, t, encoder_hidden_states=text).sample.float()
    uncond, cond = eps.chunk(2)
    eps = uncond + guidance * (cond - uncond)
    extra = {"eta": 0.0} if isinstance(sched, DDIMScheduler) else {}
    return sched.step(eps, t, z, generator=generators, **extra).prev_sample
