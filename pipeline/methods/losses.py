"""The losses of pretraining and of the unlearning methods, each a :class:`pipeline.methods.contract.Method`.

Definitions follow docs/methods.md. Notation: gamma_t = sqrt(alpha_bar_t), sigma_t =
sqrt(1 - alpha_bar_t); L(pred, target) = ||pred - target||^2 summed over pixels; a batch loss is
the mean over the batch; x ~ R (retain), a ~ A (forget). Unless a method says otherwise a step
draws x and a of the same size with one shared t ~ U{0..T-1} and one shared eps per pair.
All randomness goes through the four helpers below, which tests may replace.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from pipeline.diffusion.models import noise_levels
from pipeline.methods.contract import Batch, ForgetTermMethod, Losses, Method
from pipeline.methods.filters import ForgetFilter


def random_timesteps(scheduler: DDPMScheduler, like: torch.Tensor) -> torch.Tensor:
    """t ~ U{0, ..., T-1}, one per example of ``like``."""
    return torch.randint(0, scheduler.config.num_train_timesteps, (len(like),), device=like.device)


def forget_timesteps(scheduler: DDPMScheduler, forget_filter: ForgetFilter, like: torch.Tensor) -> torch.Tensor:
    """t for a forget batch: U{0..T-1} as :func:`random_timesteps`, or U{t1..t2} under a hard window."""
    return forget_filter.timesteps(like) if forget_filter.hard_window else random_timesteps(scheduler, like)


def gaussian_like(x: torch.Tensor) -> torch.Tensor:
    return torch.randn_like(x)


def uniform_like(x: torch.Tensor) -> torch.Tensor:
    return torch.rand_like(x)


def coin_flips(like: torch.Tensor, p: float) -> torch.Tensor:
    """One Bernoulli(p) draw per example of ``like``, as a bool tensor of shape (B,)."""
    return torch.rand(len(like), device=like.device) < p


def sq_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L(pred, target) = ||pred - target||^2 summed over all but the batch dimension, shape (B,)."""
    return (pred - target).pow(2).flatten(1).sum(1)


def denoising_error(net, scheduler: DDPMScheduler, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                    target: torch.Tensor | None = None, forget_filter: ForgetFilter | None = None) -> torch.Tensor:
    """L(eps_theta(gamma_t x + sigma_t eps, t), target) per example; target defaults to eps. With a
    ``forget_filter`` (a forget term), its filtered error instead of the plain squared error."""
    gamma, sigma = noise_levels(scheduler, t)
    pred, target = net(gamma * x + sigma * eps, t).sample, eps if target is None else target
    return sq_error(pred, target) if forget_filter is None else forget_filter.error(pred, target, t)


def rescaled_difference(g_x: torch.Tensor, g_a: torch.Tensor, scaling_norm: float) -> tuple[torch.Tensor, float]:
    """g = g_x - (scaling_norm / ||g_a||) g_a: the forget gradient rescaled to norm exactly
    ``scaling_norm`` (SISS, Alberti et al. 2025). A zero g_a contributes nothing.
    Returns g and the factor scaling_norm / ||g_a||."""
    norm = g_a.norm()
    if norm == 0:
        return g_x, 0.0
    factor = scaling_norm / norm
    return g_x - factor * g_a, float(factor)


def ddpm_loss(net, scheduler: DDPMScheduler, x: torch.Tensor) -> torch.Tensor:
    """The DDPM loss of a batch x: mean_b L(eps_theta(gamma_t x_b + sigma_t eps_b, t_b), eps_b)."""
    return denoising_error(net, scheduler, x, random_timesteps(scheduler, x), gaussian_like(x)).mean()


class DDPMLoss(Method):
    """The denoising objective of DDPM (Ho et al. 2020, eq. 14), the loss of pretraining:

        L = mean_b || eps_theta(gamma_t x_b + sigma_t eps_b, t_b) - eps_b ||^2,
        t_b ~ U{0..T-1}, eps_b ~ N(0, I).
    """

    needs = ("retain",)

    def __call__(self, net, batch: Batch) -> Losses:
        return Losses({"loss": ddpm_loss(net, self.scheduler, batch.retain)})


class CaptionedDDPMLoss(Method):
    """The denoising objective of a text-to-image latent model (Rombach et al. 2022, eq. 2), trained
    for classifier-free guidance (Ho & Salimans 2022): each example's caption embedding c_b is
    replaced by the empty prompt's, c_empty, with probability ``p_uncond`` (0.1), so that one
    network learns both eps_theta(z, t, c) and eps_theta(z, t, c_empty):

        L = mean_b || eps_theta(gamma_t z_b + sigma_t eps_b, t_b, c'_b) - eps_b ||^2,
        c'_b = c_empty with probability p_uncond, else c_b.
    """

    needs = ("retain",)

    def __init__(self, scheduler: DDPMScheduler, empty: torch.Tensor, p_uncond: float = 0.1):
        super().__init__(scheduler)
        self.empty, self.p_uncond = empty, p_uncond

    def __call__(self, net, batch: Batch) -> Losses:
        z, t = batch.retain, random_timesteps(self.scheduler, batch.retain)
        eps = gaussian_like(z)
        drop = coin_flips(z, self.p_uncond).view(-1, 1, 1)
        text = torch.where(drop, self.empty.to(batch.text).expand_as(batch.text), batch.text)
        gamma, sigma = noise_levels(self.scheduler, t)
        pred = net(gamma * z + sigma * eps, t, encoder_hidden_states=text).sample
        return Losses({"loss": sq_error(pred, eps).mean()}, {"uncond_share": float(drop.float().mean())})


class AutoencoderLoss(Method):
    """The objective of a variational autoencoder (Kingma & Welling 2014), as the latent space of a
    text-to-image model is trained: reconstruction and a ``kl_weight``-weighted KL to N(0, I),

        L = mean_b [ || D(z_b) - x_b ||^2 + beta KL(N(mu_b, diag sigma_b^2) || N(0, I)) ],
        z_b = mu_b + sigma_b n_b, n_b ~ N(0, I),  KL = 1/2 sum (mu^2 + sigma^2 - 1 - log sigma^2),

    ``net`` an ``AutoencoderKL``, x in [-1, 1]. A small beta (1e-6 in Stable Diffusion's
    autoencoder) keeps the latents close to deterministic codes while bounding their scale."""

    needs = ("retain",)

    def __init__(self, kl_weight: float = 1e-6):
        super().__init__(scheduler=None)
        self.kl_weight = kl_weight

    def __call__(self, net, batch: Batch) -> Losses:
        x = batch.retain
        posterior = net.encode(x).latent_dist
        z = posterior.mean + posterior.std * gaussian_like(posterior.mean)
        reconstruction = sq_error(net.decode(z).sample, x)
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1 - posterior.logvar).flatten(1).sum(1)
        return Losses({"loss": (reconstruction + self.kl_weight * kl).mean()},
                      {"reconstruction": reconstruction.mean().item(), "kl": kl.mean().item()})


class NaiveDeletion(DDPMLoss):
    """Naive deletion ("vanilla" fine-tuning, methods.md 1): the DDPM loss on the retain set R
    only, L = L(eps_theta(x_t, t), eps) with x ~ R. Forgetting comes only from not seeing A."""


class NegGrad(ForgetTermMethod):
    """NegGrad (gradient ascent on the forget set, methods.md 2):

        L = -s * L(eps_theta(a_t, t), eps),  a ~ A,

    with the superfactor s (0.01 in the MNIST reference). No retain term.
    """

    needs = ("forget",)

    def __init__(self, scheduler: DDPMScheduler, superfactor: float, forget_filter: ForgetFilter | None = None):
        super().__init__(scheduler, forget_filter)
        self.superfactor = superfactor

    def __call__(self, net, batch: Batch) -> Losses:
        a = batch.forget
        t = forget_timesteps(self.scheduler, self.forget_filter, a)
        forget = denoising_error(net, self.scheduler, a, t, gaussian_like(a), forget_filter=self.forget_filter).mean()
        return Losses({"loss": -self.superfactor * forget}, {"forget_loss": forget.item()})


class EraseDiff(ForgetTermMethod):
    """EraseDiff (Wu et al. 2024; methods.md 3): keep the retain loss low while pushing the forget
    images' predictions towards noise unrelated to them.

        g_x = grad L(eps_theta(x_t, t), eps)
        g_a = grad L(eps_theta(a_t, t), u),   u ~ Uniform[0, 1)^d  (uniform, as in the reference code)
        g   = g_x + max(eta - <g_x, g_a> / ||g_a||^2, 0) * g_a

    so that <g, g_a> >= eta ||g_a||^2: a descent step along g always decreases the forget term
    to first order, even when the raw gradients oppose. Shared t and eps per (x, a) pair.
    """

    needs = ("retain", "forget")

    def __init__(self, scheduler: DDPMScheduler, eta: float, forget_filter: ForgetFilter | None = None):
        super().__init__(scheduler, forget_filter)
        self.eta = eta

    def __call__(self, net, batch: Batch) -> Losses:
        x, a = batch.retain, batch.forget
        t, eps = random_timesteps(self.scheduler, x), gaussian_like(x)
        t_a = self.forget_filter.timesteps(a) if self.forget_filter.hard_window else t
        return Losses({"retain": denoising_error(net, self.scheduler, x, t, eps).mean(),
                       "forget": denoising_error(net, self.scheduler, a, t_a, eps, target=uniform_like(a),
                                                 forget_filter=self.forget_filter).mean()})

    def combine(self, grads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        g_x, g_a = grads["retain"], grads["forget"]
        sq_norm = g_a.pow(2).sum()
        coefficient = torch.clamp(self.eta - (g_x @ g_a) / sq_norm, min=0) if sq_norm > 0 else g_a.new_zeros(())
        return g_x + coefficient * g_a, {"coefficient": coefficient.item()}


MAX_LOG_WEIGHT = 80.0  # exp(80) = 5.5e34 < float32 max 3.4e38


class RescaledForgetGradient(ForgetTermMethod):
    """The update of both SISS forms: g = g_x - (scaling_norm / ||g_a||) g_a, from the gradients
    of a "retain" and a "forget" term (:func:`rescaled_difference`)."""

    needs = ("retain", "forget")

    def __init__(self, scheduler: DDPMScheduler, scaling_norm: float, forget_filter: ForgetFilter | None = None):
        super().__init__(scheduler, forget_filter)
        self.scaling_norm = scaling_norm

    def combine(self, grads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        g, factor = rescaled_difference(grads["retain"], grads["forget"], self.scaling_norm)
        return g, {"scaling_factor": factor}


class SISS(RescaledForgetGradient):
    """SISS (Alberti et al. 2025, arXiv 2503.01034; methods.md 4): one forward pass per example
    on a sample m_t of the defensive mixture q = (1 - lam) q(x_t | x) + lam q(a_t | a).

        m_t  = x_t with probability 1 - lam, else a_t              (per example; shared t, eps)
        d_x  = ||m_t - gamma_t x||^2 / (2 sigma_t^2),  d_a = ||m_t - gamma_t a||^2 / (2 sigma_t^2)
        w_x  = 1 / ((1 - lam) + lam exp(d_x - d_a)),   w_a = 1 / ((1 - lam) exp(d_a - d_x) + lam)
        L_x  = mean_b w_x L(pred, (m_t - gamma_t x) / sigma_t)
        L_a  = mean_b w_a L(pred, (m_t - gamma_t a) / sigma_t),     pred = eps_theta(m_t, t)
        g    = grad L_x - (scaling_norm / ||grad L_a||) grad L_a

    The weights are computed in log space, log w = -logaddexp(...) of the log terms (log 0 = -inf
    for lam in {0, 1}), from d_x and d_a formed in float64. Overflow is not the reason: in the
    reference form an overflowing exp gives 1 / (c + inf) = 0, the correct limit. The reasons are
    precision and dtype: at small t, d_x and d_a are each of order ||m_t||^2 / (2 sigma_t^2), very
    large, and nearly cancel, so d_x - d_a computed in float32 keeps few correct digits; and the
    ReTrack code's SISS fails outright on bf16 inputs, while here the weights never depend on the
    dtype of the forward pass. Its ``stats`` report the weights' ranges.
    """

    def __init__(self, scheduler: DDPMScheduler, lam: float, scaling_norm: float,
                 forget_filter: ForgetFilter | None = None):
        super().__init__(scheduler, scaling_norm, forget_filter)
        self.lam = lam

    def log_weights(self, d_x: torch.Tensor, d_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log w_x, log w_a) per example, from d_x and d_a, stable for any lam in [0, 1]."""
        log_keep = torch.log(torch.tensor(1.0 - self.lam, dtype=d_x.dtype, device=d_x.device))
        log_mix = torch.log(torch.tensor(self.lam, dtype=d_x.dtype, device=d_x.device))
        log_w_x = -torch.logaddexp(log_keep.expand_as(d_x), log_mix + d_x - d_a)
        log_w_a = -torch.logaddexp(log_keep + d_a - d_x, log_mix.expand_as(d_a))
        return log_w_x, log_w_a

    def __call__(self, net, batch: Batch) -> Losses:
        x, a = batch.retain, batch.forget
        t, eps = random_timesteps(self.scheduler, x), gaussian_like(x)
        gamma, sigma = noise_levels(self.scheduler, t)
        from_forget = coin_flips(x, self.lam).view(-1, 1, 1, 1)
        m_t = gamma * torch.where(from_forget, a, x) + sigma * eps
        pred = net(m_t, t).sample
        with torch.no_grad():  # in float64: d_x and d_a are large and nearly cancel for small t
            two_var = 2 * sigma.flatten().double() ** 2
            d_x = (m_t - gamma * x).double().pow(2).flatten(1).sum(1) / two_var
            d_a = (m_t - gamma * a).double().pow(2).flatten(1).sum(1) / two_var
            log_w_x, log_w_a = self.log_weights(d_x, d_a)
            # lam in (0, 1) bounds w_x <= 1/(1-lam), w_a <= 1/lam; at lam = 0 or 1 one weight is a
            # plain density ratio, capped at float32's range so it can never become inf.
            w_x, w_a = (w.clamp(max=MAX_LOG_WEIGHT).exp().to(pred.dtype) for w in (log_w_x, log_w_a))
        stats = {"w_x_min": w_x.min().item(), "w_x_max": w_x.max().item(),
                 "w_a_min": w_a.min().item(), "w_a_max": w_a.max().item(),
                 "forget_share": from_forget.float().mean().item()}
        residual = pred - (m_t - gamma * a) / sigma
        forget = self.forget_filter.weighted(w_a * self.forget_filter.sq_norm(residual, t), t,
                                             drawn_in_window=False)  # one t for both terms: weight, not draw
        return Losses({"retain": (w_x * sq_error(pred, (m_t - gamma * x) / sigma)).mean(), "forget": forget.mean()},
                      stats)


class SISSNoIS(RescaledForgetGradient):
    """SISS without importance sampling (methods.md 5): two forward passes, on x_t and on a_t,

        L_x = L(eps_theta(x_t, t), eps),   L_a = L(eps_theta(a_t, t), eps)   (shared t, eps)
        g   = grad L_x - (scaling_norm / ||grad L_a||) grad L_a.
    """

    def __call__(self, net, batch: Batch) -> Losses:
        x, a = batch.retain, batch.forget
        t, eps = random_timesteps(self.scheduler, x), gaussian_like(x)
        t_a = self.forget_filter.timesteps(a) if self.forget_filter.hard_window else t
        return Losses({"retain": denoising_error(net, self.scheduler, x, t, eps).mean(),
                       "forget": denoising_error(net, self.scheduler, a, t_a, eps,
                                                 forget_filter=self.forget_filter).mean()})


class ReTrack(ForgetTermMethod):
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

    Both terms come from one UNet call on the forget and retain batches stacked: the UNet treats
    every example alone (GroupNorm normalizes within an example), so the predictions are those of
    two calls, and the call runs on one batch of 2B where the reference code makes two of B. The
    draws keep the reference's order: the forget batch's t and eps, then the retain batch's.
    """

    needs = ("retain", "forget")

    def __init__(self, scheduler: DDPMScheduler, lam: float, forget_filter: ForgetFilter | None = None):
        super().__init__(scheduler, forget_filter)
        self.lam = lam

    def unlearn_loss(self, pred: torch.Tensor, a_t: torch.Tensor, t: torch.Tensor,
                     neighbours: torch.Tensor) -> torch.Tensor:
        """L_unlearn for the predictions ``pred`` = eps_theta(a_t, t) of noised forget images a_t
        (B, C, H, W) and the forget images' neighbours (B, K, C, H, W)."""
        gamma, sigma = noise_levels(self.scheduler, t)
        with torch.no_grad():
            v = (a_t[:, None] - gamma[:, None] * neighbours) / sigma[:, None]  # (B, K, C, H, W)
            w = torch.softmax(-v.pow(2).flatten(2).sum(2) / 2, dim=1)  # (B, K)
        per_neighbour = self.forget_filter.sq_norm(pred[:, None] - v, t)  # (B, K)
        return self.forget_filter.weighted((w * per_neighbour).sum(1), t).mean()

    def __call__(self, net, batch: Batch) -> Losses:
        a, x = batch.forget, batch.retain
        t_a, eps_a = forget_timesteps(self.scheduler, self.forget_filter, a), gaussian_like(a)
        t_x, eps_x = random_timesteps(self.scheduler, x), gaussian_like(x)
        (gamma_a, sigma_a), (gamma_x, sigma_x) = noise_levels(self.scheduler, t_a), noise_levels(self.scheduler, t_x)
        a_t = gamma_a * a + sigma_a * eps_a
        pred = net(torch.cat([a_t, gamma_x * x + sigma_x * eps_x]), torch.cat([t_a, t_x])).sample
        unlearn = self.unlearn_loss(pred[:len(a)], a_t, t_a, batch.neighbours)
        retain = sq_error(pred[len(a):], eps_x).mean()
        return Losses({"loss": self.lam * unlearn + (1 - self.lam) * retain},
                      {"unlearn_loss": unlearn.item(), "retain_loss": retain.item()})
