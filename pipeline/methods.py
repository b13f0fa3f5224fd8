"""Losses of the unlearning methods, and the registry that names them.

Each method is a small class in the style of NVlabs/edm ``training/loss.py``: hyperparameters in
``__init__``, the math in ``__call__(net, batch)``, which returns the scalar loss that one
optimizer step minimises. ``needs`` says which batches the training loop must draw (see
:class:`pipeline.training.Batch`). Definitions follow ``docs/methods.md`` (notation: gamma_t =
sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t), L(pred, target) = ||pred - target||^2 summed
over pixels, a batch loss is the mean over the batch).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from pipeline.models import noise_levels

TRAINING_KEYS = ("steps", "batch_size", "lr")


def sq_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L(pred, target) = ||pred - target||^2 summed over all but the batch dimension, shape (B,)."""
    return (pred - target).pow(2).flatten(1).sum(1)


def random_timesteps(scheduler: DDPMScheduler, n: int, device) -> torch.Tensor:
    """t ~ U{0, ..., T-1}, one per example."""
    return torch.randint(0, scheduler.config.num_train_timesteps, (n,), device=device)


class DDPMLoss:
    """The denoising objective of DDPM (Ho et al. 2020, eq. 14), the loss of pretraining:

        L = mean_b || eps_theta(gamma_t x_b + sigma_t eps_b, t_b) - eps_b ||^2,
        t_b ~ U{0..T-1}, eps_b ~ N(0, I).
    """

    needs = ("retain",)

    def __init__(self, scheduler: DDPMScheduler):
        self.scheduler = scheduler

    def __call__(self, net, batch) -> torch.Tensor:
        x = batch.retain
        t = random_timesteps(self.scheduler, len(x), x.device)
        eps = torch.randn_like(x)
        gamma, sigma = noise_levels(self.scheduler, t)
        return sq_error(net(gamma * x + sigma * eps, t).sample, eps).mean()


class NaiveDeletion(DDPMLoss):
    """Naive deletion ("vanilla" fine-tuning, methods.md 1): the DDPM loss on the retain set R
    only, L = L(eps_theta(x_t, t), eps) with x ~ R. Forgetting comes only from not seeing A."""


class ReTrack:
    """ReTrack (Shi et al. 2026, arXiv 2509.13007; methods.md 6): redirect the denoising
    trajectory of each forget image a towards its K nearest retain images r_1..r_K.

        a_t = gamma_t a + sigma_t eps                   (own t, eps per forget element)
        v_j = (a_t - gamma_t r_j) / sigma_t             (the noise that would explain a_t from r_j)
        w_j = softmax_j(-||v_j||^2 / 2)                 (no gradient)
        L_unlearn = mean_b sum_j w_j L(eps_theta(a_t, t), v_j)
        L_retain  = DDPM loss on an independent retain batch
        L = lam * L_unlearn + (1 - lam) * L_retain

    The minimiser of L_unlearn over eps_theta(a_t, t) is sum_j w_j v_j, the exact posterior-mean
    noise of the K-point empirical distribution {r_j}: the model learns to denoise a_t towards
    the retain neighbours instead of towards a. Reference lam: 0.005 on MNIST.
    """

    needs = ("retain", "forget")

    def __init__(self, scheduler: DDPMScheduler, lam: float):
        self.scheduler = scheduler
        self.lam = lam
        self.retain_loss = DDPMLoss(scheduler)

    def unlearn_loss(self, net, a: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """L_unlearn for forget images a (B, C, H, W) and their neighbours (B, K, C, H, W)."""
        t = random_timesteps(self.scheduler, len(a), a.device)
        eps = torch.randn_like(a)
        gamma, sigma = noise_levels(self.scheduler, t)
        a_t = gamma * a + sigma * eps
        with torch.no_grad():
            v = (a_t[:, None] - gamma[:, None] * neighbours) / sigma[:, None]  # (B, K, C, H, W)
            w = torch.softmax(-v.pow(2).flatten(2).sum(2) / 2, dim=1)  # (B, K)
        pred = net(a_t, t).sample
        per_neighbour = (pred[:, None] - v).pow(2).flatten(2).sum(2)  # (B, K)
        return (w * per_neighbour).sum(1).mean()

    def __call__(self, net, batch) -> torch.Tensor:
        unlearn = self.unlearn_loss(net, batch.forget, batch.neighbours)
        return self.lam * unlearn + (1 - self.lam) * self.retain_loss(net, batch)


REGISTRY = {
    "naive": NaiveDeletion,
    "retrack": ReTrack,
}


def make_method(name: str, cfg: dict, scheduler: DDPMScheduler):
    """The method ``name`` with its hyperparameters from ``params['methods'][name]``."""
    hyper = {k: v for k, v in cfg.items() if k not in TRAINING_KEYS}
    return REGISTRY[name](scheduler, **hyper)
