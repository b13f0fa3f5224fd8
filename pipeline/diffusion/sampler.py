"""The sampler: N seeded samples from one model.

DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with ``sampling.steps`` inference steps
of the model's own DDPMScheduler (50 for MNIST in the SISS/ReTrack protocol), in batches. Each
sample's initial noise and every ancestral step's noise come from its own generator, seeded from
``sampling.seed`` and the sample's index, so all models start from the same noise and their
samples pair up, and a sample does not depend on the batch size or on how the work is split. The update
is ``DDPMScheduler.step``'s, its coefficients computed once per run (:func:`ancestral_steps`),
and draws its noise in ``DDPMPipeline``'s order: given one generator per image, the pipeline gives
the same images. How the
UNet runs comes from ``compute`` (:func:`pipeline.diffusion.models.compute_settings`): ``precision`` (bf16:
its forward passes under bfloat16 autocast; the update stays in float32), ``channels_last`` and
``compile`` (:func:`pipeline.diffusion.models.prepare`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDPMScheduler
from tqdm import tqdm

from pipeline.diffusion.models import autocast, prepare, standard_layout

VARIANCES = ("fixed_small", "fixed_large")


@dataclass(frozen=True)
class AncestralStep:
    """One update x_t -> x_t' of DDPM ancestral sampling, t' the inference timestep after t; its
    coefficients are float32 values (see :func:`ancestral_steps`), ``clip`` the clipping range of
    the predicted x_0 (None: none)."""

    t: int
    sqrt_one_minus_alpha_bar: float
    sqrt_alpha_bar: float
    coef_x0: float
    coef_xt: float
    sigma: float
    clip: float | None

    def __call__(self, x: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """x_t' from x_t, the predicted noise and, for t > 0, z ~ N(0, I)."""
        x0 = (x - self.sqrt_one_minus_alpha_bar * eps) / self.sqrt_alpha_bar
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        mean = self.coef_x0 * x0 + self.coef_xt * x
        return mean if noise is None else mean + self.sigma * noise


def ancestral_steps(scheduler: DDPMScheduler, steps: int) -> list[AncestralStep]:
    """The ``steps`` updates of ``DDPMScheduler.step`` after ``set_timesteps(steps)``, computed once.

    For inference timestep t and the next one t' (``leading`` spacing: t' = t - T // steps, and
    after the last t' = -1 with alpha_bar_{-1} = 1), let alpha_t = alpha_bar_t / alpha_bar_t' and
    beta_t = 1 - alpha_t (the skipped steps merged into one). The step predicts

        x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)      (Ho et al. 2020, eq. 15),

    clipped to [-r, r] with ``clip_sample`` (r = ``clip_sample_range``), and draws
    x_t' = mu + sigma_t z, z ~ N(0, I), without noise for t = 0, where mu and sigma_t^2 are the
    mean and variance of the posterior q(x_t' | x_t, x_0) (eq. 7; Algorithm 2 when t' = t - 1):

        mu = sqrt(alpha_bar_t') beta_t / (1 - alpha_bar_t) x_0
             + sqrt(alpha_t) (1 - alpha_bar_t') / (1 - alpha_bar_t) x_t,
        sigma_t^2 = (1 - alpha_bar_t') / (1 - alpha_bar_t) beta_t, floored at 1e-20   (fixed_small)

    or sigma_t^2 = beta_t (``variance_type`` fixed_large, the other choice of section 3.2). The
    coefficients are computed in float32 with the scheduler's own operations, so that the update
    gives its numbers (to the bit on the CPU). Epsilon prediction only, without dynamic thresholding.
    """
    cfg = scheduler.config
    if cfg.prediction_type != "epsilon" or cfg.variance_type not in VARIANCES or cfg.thresholding:
        raise ValueError(f"DDPM sampling: needs epsilon prediction, variance_type in {VARIANCES} and no "
                         f"thresholding; the scheduler has {cfg.prediction_type!r}, {cfg.variance_type!r}, "
                         f"thresholding {cfg.thresholding}")
    scheduler = DDPMScheduler.from_config(cfg)
    scheduler.set_timesteps(steps)
    clip = cfg.clip_sample_range if cfg.clip_sample else None
    plan = []
    for t in scheduler.timesteps.tolist():
        prev = int(scheduler.previous_timestep(t))
        alpha_bar = scheduler.alphas_cumprod[t]
        alpha_bar_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.one
        alpha = alpha_bar / alpha_bar_prev
        beta = 1 - alpha
        variance = beta if cfg.variance_type == "fixed_large" else torch.clamp(
            (1 - alpha_bar_prev) / (1 - alpha_bar) * beta, min=1e-20)
        plan.append(AncestralStep(
            t, float((1 - alpha_bar) ** 0.5), float(alpha_bar ** 0.5),
            float(alpha_bar_prev ** 0.5 * beta / (1 - alpha_bar)),
            float(alpha ** 0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar)), float(variance ** 0.5), clip))
    return plan


def sample_generators(seed: int, indices: range) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from (``seed``, the sample's index) through numpy's
    ``SeedSequence``: sample i's noise depends on nothing else (not the batch size, the number of
    jobs or devices), and distinct indices get independent streams."""
    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0]))
            for i in indices]


def normal(shape: tuple[int, ...], generators: list[torch.Generator], dev: torch.device) -> torch.Tensor:
    """z ~ N(0, I) of ``shape`` = (len(generators), ...), row i drawn on the CPU by generator i
    (the same numbers on every device) and sent to ``dev``: to a GPU from pinned memory without
    blocking, so that the host goes on queueing the UNet's kernels instead of waiting for the GPU
    at every step."""
    z = torch.stack([torch.randn(shape[1:], generator=g) for g in generators])
    return z.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else z


def sample(unet, scheduler: DDPMScheduler, n: int, steps: int, batch_size: int, seed: int,
           precision: str = "fp32", channels_last: bool = False, compile: bool = False) -> np.ndarray:
    """``n`` samples in [0, 1], shape (n, C, H, W), in batches of ``batch_size``, from ``unet``
    on its device; the UNet in ``precision`` (fp32 or bf16), optionally channels_last and compiled
    (:func:`pipeline.diffusion.models.prepare`; its weights are back in the default layout on return).
    The layout changes happen outside inference mode, so the weights stay ordinary tensors."""
    size = unet.config.sample_size
    shape = (unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
    net = prepare(unet, next(unet.parameters()).device, channels_last, compile)
    with torch.inference_mode():
        samples = chains(net, ancestral_steps(scheduler, steps), shape, n, batch_size, seed, precision)
    standard_layout(unet)
    return samples


def chains(net, plan: list[AncestralStep], shape: tuple[int, ...], n: int, batch_size: int, seed: int,
           precision: str) -> np.ndarray:
    """Run ``plan`` on ``n`` chains of images of ``shape``, ``batch_size`` at a time. Chain i's
    generator (:func:`sample_generators`) draws its x_T and then each step's z, as ``DDPMPipeline``
    does with a list of generators, one per image: a sample is the same whatever the batch size."""
    dev = next(net.parameters()).device
    out = []
    bar = tqdm(total=n * len(plan), desc="sample", unit="img-step", mininterval=5)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        generators = sample_generators(seed, range(start, start + b))
        x = normal((b, *shape), generators, dev)
        for step in plan:
            with autocast(precision, dev):
                eps = net(x, torch.full((b,), step.t, device=dev)).sample
            x = step(x, eps.float(), normal(x.shape, generators, dev) if step.t > 0 else None)
            bar.update(b)
        out.append(((x.clamp(-1, 1) + 1) / 2).cpu().numpy())
    bar.close()
    return np.concatenate(out).astype(np.float32)
