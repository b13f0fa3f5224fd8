"""Negative log-likelihood of images in bits/dim by the probability-flow ODE.

Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations",
Appendix D.2. A DDPM with linear betas beta_start -> beta_end over T steps is the discretisation of
the VP-SDE dx = -beta(t)/2 x dt + sqrt(beta(t)) dw, t in [eps, 1], with

    beta(t) = beta_min + t (beta_max - beta_min),   beta_min = T beta_start,  beta_max = T beta_end

(0.1 -> 20 for the usual 1e-4 -> 0.02 over 1000 steps). Its marginals are x_t = alpha(t) x_0 +
sigma(t) z with log alpha(t) = -t^2 (beta_max - beta_min)/4 - t beta_min/2 and sigma(t) =
sqrt(1 - alpha(t)^2). The network, called at the discrete timestep t (T - 1), predicts the noise,
so the score is -eps_theta(x, t)/sigma(t) and the probability-flow ODE is

    dx/dt = f(x, t) = -beta(t)/2 (x - eps_theta(x, t) / sigma(t)).

Integrating it from the image x(eps) = x to t = 1 together with the divergence of f gives

    log p_eps(x) = log N(x(1); 0, I) + int_eps^1 div f(x(t), t) dt,

where div f is Hutchinson's estimate v^T (df/dx) v with one Rademacher vector v per image, fixed
for the whole solve (one vector-Jacobian product per function evaluation). The augmented state
[x, log-det] of the whole batch is integrated by RK45. For data in [-1, 1], the probability of an
8-bit pixel bin (width 2/256) is its density times (2/256)^D, hence

    bits/dim = -log p_eps(x) / (D ln 2) + 7,   D = C H W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from tqdm import tqdm

from pipeline.errors import UserError


@dataclass(frozen=True)
class VPSDE:
    """The VP-SDE whose discretisation is a linear-beta, epsilon-prediction DDPMScheduler."""

    beta_min: float
    beta_max: float
    T: int

    @classmethod
    def from_scheduler(cls, scheduler) -> VPSDE:
        cfg = scheduler.config
        if cfg.beta_schedule != "linear":
            raise UserError(f"probability-flow likelihood: needs a scheduler with beta_schedule 'linear' "
                            f"(the VP-SDE), got {cfg.beta_schedule!r}")
        if cfg.prediction_type != "epsilon":
            raise UserError(f"probability-flow likelihood: needs a scheduler with prediction_type 'epsilon', "
                            f"got {cfg.prediction_type!r}")
        T = cfg.num_train_timesteps
        return cls(cfg.beta_start * T, cfg.beta_end * T, T)

    def beta(self, t: float) -> float:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def sigma(self, t: float) -> float:
        log_alpha = -t**2 * (self.beta_max - self.beta_min) / 4 - t * self.beta_min / 2
        return math.sqrt(-math.expm1(2 * log_alpha))


class ProbabilityFlowNLL:
    """Bits/dim of images under a DDPM by the probability-flow ODE of its VP-SDE (Song et al. 2021, App. D.2).

    log p_eps(x) = log N(x(1); 0, I) + int_eps^1 v^T (df/dx)(x(t), t) v dt, with the ODE
    dx/dt = f(x, t) = -beta(t)/2 (x - eps_theta(x, t (T - 1)) / sigma(t)) solved by RK45 from
    x(eps) = x, v a Rademacher vector per image drawn from a generator seeded with ``seed``, and
    bits/dim = -log p_eps(x) / (D ln 2) + 7 for data in [-1, 1] (8-bit bins of width 2/256).
    """

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-5, seed: int = 0):
        self.rtol = rtol
        self.atol = atol
        self.eps = eps
        self.seed = seed

    def __call__(self, net, scheduler, images: torch.Tensor) -> dict:
        """images: (B, C, H, W) in [-1, 1]. Returns {"bits_per_dim": np.ndarray (B,), "nfe": int}."""
        sde = VPSDE.from_scheduler(scheduler)
        dev = next(net.parameters()).device
        shape, n, b = images.shape, images.numel(), len(images)
        generator = torch.Generator().manual_seed(self.seed)
        v = (2 * torch.randint(0, 2, shape, generator=generator) - 1).to(dev, torch.float32)
        bar = tqdm(desc="likelihood", unit="nfe", mininterval=5)

        def augmented(t: float, state: np.ndarray) -> np.ndarray:
            bar.update()
            x = torch.from_numpy(state[:n]).view(shape).to(dev, torch.float32).requires_grad_()
            with torch.enable_grad():
                timestep = torch.full((b,), t * (sde.T - 1), device=dev)
                drift = -sde.beta(t) / 2 * (x - net(x, timestep).sample / sde.sigma(t))
                (vjp,) = torch.autograd.grad(drift, x, v)
            div = (vjp * v).flatten(1).sum(1)
            return torch.cat([drift.detach().flatten(), div]).cpu().double().numpy()

        start = np.concatenate([images.detach().cpu().double().flatten().numpy(), np.zeros(b)])
        with bar:
            solution = solve_ivp(augmented, (self.eps, 1.0), start, method="RK45", t_eval=[1.0],
                                 rtol=self.rtol, atol=self.atol)
        if not solution.success:
            raise RuntimeError(f"probability-flow ODE solve failed: {solution.message}")
        end = solution.y[:, -1]
        x1, log_det = end[:n].reshape(b, -1), end[n:]
        d = x1.shape[1]
        log_prior = -0.5 * (d * math.log(2 * math.pi) + (x1**2).sum(1))
        return {"bits_per_dim": -(log_prior + log_det) / (d * math.log(2)) + 7, "nfe": int(solution.nfev)}
