"""The forget filter: time- and frequency-selective forgetting, a plug-in for the forget term of
any method.

The time/frequency paper (arXiv 2510.17917) finds that forgetting is uneven across diffusion
time and frequency, and restricts the forget term to a window of timesteps and to the low
frequencies of its residual. It publishes no code; this module is the operator implemented here,
stated exactly. The retain term is never touched. With neither restriction the forget term is the
method's own, computed by the same calls with the same random draws: results are bit-identical.

**Time** (``time: {window: [t1, t2], soft: tau}``), inclusive integer timesteps:

- hard (``soft: null``): the forget term sees only t in [t1, t2]. A method that noises its
  forget batch with its own draw of t draws t ~ U{t1..t2} instead (NegGrad, ReTrack, and EraseDiff
  and SISS-no-IS, whose forget pass then draws its own t rather than sharing the retain pass's).
  SISS noises one mixture sample per example with one t for both terms; there the forget term is
  weighted by w(t) = 1[t1 <= t <= t2] * T / (t2 - t1 + 1), which has the same expectation as
  drawing t from the window (E_{t~U{0..T-1}} w(t) f(t) = E_{t~U{t1..t2}} f(t)).
- soft (``soft: tau`` > 0): t keeps its distribution and the forget term of each example is
  weighted by w(t) = s(t) / mean_{t'=0..T-1} s(t'), s(t) = sigmoid((t - t1) / tau) *
  sigmoid((t2 - t) / tau): a window with logistic edges of width tau, its weights averaging 1
  over t, so the term keeps its scale. tau -> 0 approaches the hard window (with weight 1/2 at
  t1 and t2 before normalisation).

**Frequency** (``frequency: {radius: r0, radius_at_T: r1}``): the forget term's residual
rho = pred - target (B, C, H, W) is low-pass filtered before its squared norm:

    L = || F^-1( M_t . F(rho) ) ||^2 = sum_k M_t(k) |F(rho)_k|^2

with F the orthonormal 2-D DFT over (H, W) per channel (so Parseval holds and M = 1 gives the
plain squared error), k = (k_y, k_x) the signed integer frequencies (``torch.fft.fftfreq(n) * n``),
and M_t(k) = 1[ sqrt(k_y^2 + k_x^2) <= r(t) ], r(t) = r0 + (r1 - r0) * t / (T - 1) (r1 = null:
r(t) = r0). The mask is symmetric under k -> -k, so the filtered residual is real. For a latent
model the residual lives in latent space and so does the filter.
"""

from __future__ import annotations

import functools

import torch


class ForgetFilter:
    """The time window and frequency low-pass of one method's forget term (module doc); with
    neither, it keeps the term as it is."""

    def __init__(self, num_train_timesteps: int, time: dict | None = None, frequency: dict | None = None):
        self.T = num_train_timesteps
        self.window, self.tau = None, None
        if time:  # 0 <= t1 <= t2 < T, as pipeline.params.validation checks
            self.window, self.tau = tuple(time["window"]), time.get("soft")
        self.radius = frequency["radius"] if frequency else None
        self.radius_at_T = frequency.get("radius_at_T") if frequency else None

    @property
    def hard_window(self) -> bool:
        return self.window is not None and self.tau is None

    def describe(self) -> dict:
        return {"window": list(self.window) if self.window else None, "soft": self.tau,
                "radius": self.radius, "radius_at_T": self.radius_at_T}

    def timesteps(self, like: torch.Tensor) -> torch.Tensor:
        """t for a forget batch that the method noises with its own draw: U{t1..t2} under a hard
        window, else U{0..T-1} (the same call as the unmodified method)."""
        low, high = self.window if self.hard_window else (0, self.T - 1)
        return torch.randint(low, high + 1, (len(like),), device=like.device)

    def weights(self, t: torch.Tensor, drawn_in_window: bool) -> torch.Tensor | None:
        """w(t) per example, or None for 1: soft weights; the hard window's indicator weights
        when t was not drawn from the window (SISS)."""
        if self.window is None:
            return None
        t1, t2 = self.window
        if self.tau is not None:
            return _soft_weights(self.T, t1, t2, float(self.tau), str(t.device))[t]
        if drawn_in_window:
            return None
        return ((t >= t1) & (t <= t2)).to(torch.float32) * (self.T / (t2 - t1 + 1))

    def mask(self, t: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """M_t(k), shape (B, 1, H, W), in the unshifted layout of ``torch.fft.fft2``."""
        ky = torch.fft.fftfreq(height, device=t.device) * height
        kx = torch.fft.fftfreq(width, device=t.device) * width
        k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
        r = torch.full(t.shape, float(self.radius), device=t.device)
        if self.radius_at_T is not None:
            r = self.radius + (self.radius_at_T - self.radius) * t.to(torch.float32) / (self.T - 1)
        return (k[None, None] <= r.view(-1, 1, 1, 1) + 1e-6).to(torch.float32)

    def low_pass(self, residual: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """F^-1(M_t . F(residual)) for residuals (B, ..., H, W); real."""
        mask = self.mask(t, *residual.shape[-2:])
        mask = mask.view(len(t), *([1] * (residual.dim() - 3)), *mask.shape[-2:])
        return torch.fft.ifft2(torch.fft.fft2(residual, norm="ortho") * mask, norm="ortho").real

    def sq_norm(self, residual: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """||F^-1(M_t F(residual))||^2 over the last three dimensions (C, H, W): shape (B,) for
        residuals (B, C, H, W), (B, K) for (B, K, C, H, W); exactly ``||residual||^2`` without a
        frequency low-pass."""
        if self.radius is not None:
            residual = self.low_pass(residual, t)
        return residual.pow(2).flatten(-3).sum(-1)

    def error(self, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor,
              drawn_in_window: bool = True) -> torch.Tensor:
        """The selected forget error per example, shape (B,): w(t) ||F^-1(M_t F(pred - target))||^2."""
        return self.weighted(self.sq_norm(pred - target, t), t, drawn_in_window)

    def weighted(self, per_example: torch.Tensor, t: torch.Tensor, drawn_in_window: bool = True) -> torch.Tensor:
        w = self.weights(t, drawn_in_window)
        return per_example if w is None else w.to(per_example.dtype) * per_example


@functools.cache
def _soft_weights(T: int, t1: int, t2: int, tau: float, device: str) -> torch.Tensor:
    t = torch.arange(T, dtype=torch.float64)
    s = torch.sigmoid((t - t1) / tau) * torch.sigmoid((t2 - t) / tau)
    return (s / s.mean()).to(torch.float32).to(device)
