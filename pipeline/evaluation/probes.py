"""What a model does with one given image: the memorization probe and the membership attack.

Memorization probe (the time/frequency paper's SSCD protocol, methods.md): noise a forget image
x_0 to step t (250) of the forward process, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) z, and
denoise it back to step 0 with the model by DDPM ancestral steps (Ho et al. 2020, Algorithm 2)
over ``steps`` evenly spaced timesteps t, ..., 0. A model that has memorized x_0 returns it; one
that has forgotten it returns something else. The reconstructions are compared with x_0 in
pixels and in an embedding (:mod:`pipeline.evaluation.copydetect`).

Membership inference (the loss attack of Yeom et al. 2018, as used on diffusion models by
Carlini et al. 2023): the score of an image x is minus its denoising loss

    L(x) = 1/J sum_j || z_j - eps_theta(sqrt(abar_{t_j}) x + sqrt(1 - abar_{t_j}) z_j, t_j) ||^2 / D

over J draws (t_j ~ U{0..T-1}, z_j ~ N(0, I)) that are the same for every image and every
model, and the attack's AUC is P(score(forget image) > score(held-out image)) (ties count 1/2).
Training images have lower loss, so the pretrained model gives a high AUC; forgetting should
bring it to where the retrained model is.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDPMScheduler
from torchmetrics.functional.classification import binary_auroc
from tqdm import tqdm

from pipeline.diffusion.models import noise_levels


def probe_timesteps(t: int, steps: int) -> list[int]:
    """``steps`` evenly spaced, distinct timesteps from t down to (above) 0: t, ..., t / steps."""
    return sorted({max(1, int(round(s))) for s in np.linspace(t, 0, steps + 1)[:-1]}, reverse=True)


@torch.no_grad()
def reconstruct(unet, scheduler: DDPMScheduler, images: torch.Tensor, t: int, steps: int, draws: int,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe of each image (B, C, H, W) in [-1, 1]: its ``draws`` noised versions x_t and
    their reconstructions x_0, both (B, draws, C, H, W) in [-1, 1]."""
    scheduler = DDPMScheduler.from_config(scheduler.config)
    scheduler.set_timesteps(timesteps=probe_timesteps(t, steps))
    dev = next(unet.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    x0 = images.repeat_interleave(draws, dim=0)
    gamma, sigma = noise_levels(scheduler, torch.full((len(x0),), t))
    noised = gamma * x0 + sigma * torch.randn(x0.shape, generator=generator)
    x = noised.to(dev)
    for step in tqdm(scheduler.timesteps, desc=f"probe t={t}", unit="step", mininterval=5):
        eps = unet(x, step.to(dev).expand(len(x))).sample
        x = scheduler.step(eps, step, x, generator=generator).prev_sample
    shape = (len(images), draws, *images.shape[1:])
    return noised.view(shape), x.clamp(-1, 1).cpu().view(shape)


@torch.no_grad()
def denoising_losses(unet, scheduler: DDPMScheduler, images: torch.Tensor, draws: int, seed: int,
                     batch_size: int = 256) -> np.ndarray:
    """L(x) of each image (N, C, H, W) in [-1, 1] (module docstring), float64 (N,)."""
    generator = torch.Generator().manual_seed(seed)
    T = scheduler.config.num_train_timesteps
    ts = torch.randint(0, T, (draws,), generator=generator)
    zs = torch.randn((draws, *images.shape[1:]), generator=generator)
    dev = next(unet.parameters()).device
    total = torch.zeros(len(images), dtype=torch.float64)
    for t, z in tqdm(list(zip(ts, zs)), desc="membership losses", unit="draw", mininterval=5):
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            gamma, sigma = noise_levels(scheduler, t.expand(len(x)))
            noisy = (gamma * x + sigma * z).to(dev)
            eps = unet(noisy, t.to(dev).expand(len(x))).sample.cpu()
            total[start:start + len(x)] += (eps - z).pow(2).flatten(1).mean(1).double()
    return (total / draws).numpy()


def membership_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """AUC of the loss attack: members are predicted by low loss (score = -loss)."""
    scores = torch.from_numpy(-np.concatenate([member_losses, nonmember_losses]))
    target = torch.cat([torch.ones(len(member_losses)), torch.zeros(len(nonmember_losses))]).long()
    return float(binary_auroc(scores, target))
