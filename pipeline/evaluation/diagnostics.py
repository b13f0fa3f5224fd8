"""Diagnostics of an unlearning run: where in diffusion time and in frequency unlearning changed a model, the
two analyses behind the time/frequency paper's choice of a time window and a low-pass
(arXiv 2510.17917), for one unlearned model against the pretrained one.

Timesteps are split into B buckets [floor(bT/B), floor((b+1)T/B)). In each, ``draws`` triples (a, t, eps)
are drawn (seeded; a cycles over the distinct forget images, t ~ U within the bucket), the same
for both models, and with a_t = gamma_t a + sigma_t eps:

1. forget-loss gradient norm: n_M = ||grad_theta ||eps_theta(a_t, t) - eps||^2|| for the pretrained
   and the unlearned model M, one example at a time; per bucket the mean of each and the gap
   (unlearned - pretrained). Unlearning that acts at time t leaves a gap there.
2. spectrum of the change in predicted noise: Delta = eps_unlearned(a_t, t) - eps_pretrained(a_t, t);
   P(rho) = mean over draws and channels of |F(Delta)_k|^2 over the frequencies k with
   round(|k|) = rho (F the orthonormal 2-D DFT, k the signed integer frequencies). Mass at low rho
   is a change of coarse, semantic content; at high rho, of fine detail.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pipeline.artifacts import atomic_path  # noqa: E402
from pipeline.diffusion.models import noise_levels  # noqa: E402

matplotlib.use("Agg")


def draws(forget: torch.Tensor, T: int, buckets: int, per_bucket: int, seed: int):
    """(bucket, a, t, eps) triples, the same for every model: seeded, a cycling over ``forget``."""
    generator = torch.Generator().manual_seed(seed)
    edges = np.linspace(0, T, buckets + 1).astype(int)
    for b in range(buckets):
        t = torch.randint(int(edges[b]), int(edges[b + 1]), (per_bucket,), generator=generator)
        eps = torch.randn((per_bucket, *forget.shape[1:]), generator=generator)
        yield b, forget[torch.arange(per_bucket) % len(forget)], t.to(forget.device), eps.to(forget.device)


def gradient_norm(net, scheduler, a: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> float:
    """||grad_theta ||eps_theta(a_t, t) - eps||^2|| for one example (a, t, eps of batch size 1)."""
    gamma, sigma = noise_levels(scheduler, t)
    net.zero_grad(set_to_none=True)
    (net(gamma * a + sigma * eps, t).sample - eps).pow(2).sum().backward()
    return float(torch.sqrt(sum(p.grad.pow(2).sum() for p in net.parameters() if p.grad is not None)))


def radial_power(delta: torch.Tensor) -> np.ndarray:
    """P(rho) for rho = 0..round(max |k|): mean |F(delta)_k|^2 over the examples, channels and
    frequencies with round(|k|) = rho; ``delta`` (N, C, H, W)."""
    h, w = delta.shape[-2:]
    k = torch.sqrt((torch.fft.fftfreq(h) * h)[:, None] ** 2 + (torch.fft.fftfreq(w) * w)[None, :] ** 2)
    rho = torch.round(k).long().flatten()
    power = torch.fft.fft2(delta.double(), norm="ortho").abs().pow(2).mean(dim=(0, 1)).flatten()
    return (torch.bincount(rho, weights=power) / torch.bincount(rho)).numpy()


def diagnose(pretrained, unlearned, scheduler, forget: torch.Tensor, buckets: int, per_bucket: int,
             seed: int) -> dict:
    T = scheduler.config.num_train_timesteps
    out = {"buckets": [], "T": T}
    edges = np.linspace(0, T, buckets + 1).astype(int)
    for b, a, t, eps in tqdm(draws(forget, T, buckets, per_bucket, seed), total=buckets, desc="diagnose"):
        norms = {name: [gradient_norm(net, scheduler, a[i:i + 1], t[i:i + 1], eps[i:i + 1]) for i in range(len(t))]
                 for name, net in (("pretrained", pretrained), ("unlearned", unlearned))}
        with torch.no_grad():
            gamma, sigma = noise_levels(scheduler, t)
            a_t = gamma * a + sigma * eps
            delta = unlearned(a_t, t).sample - pretrained(a_t, t).sample
        out["buckets"].append({
            "t_range": [int(edges[b]), int(edges[b + 1]) - 1],
            "grad_norm_pretrained": float(np.mean(norms["pretrained"])),
            "grad_norm_unlearned": float(np.mean(norms["unlearned"])),
            "grad_norm_gap": float(np.mean(norms["unlearned"]) - np.mean(norms["pretrained"])),
            "delta_power_by_radius": radial_power(delta).tolist(),
        })
    return out


def figure(path, result: dict, title: str) -> None:
    buckets = result["buckets"]
    centres = [np.mean(b["t_range"]) for b in buckets]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    left.plot(centres, [b["grad_norm_pretrained"] for b in buckets], "o-", label="pretrained")
    left.plot(centres, [b["grad_norm_unlearned"] for b in buckets], "s-", label="unlearned")
    left.set_xlabel("diffusion timestep t (bucket centre)")
    left.set_ylabel("forget-loss gradient norm ‖∇θ L‖")
    left.set_yscale("log")
    left.set_title("Forget-loss gradient norm on the forget images")
    left.legend()
    power = np.array([b["delta_power_by_radius"] for b in buckets])
    image = right.imshow(np.log10(power + 1e-12).T, origin="lower", aspect="auto", cmap="magma",
                         extent=(0, result["T"], -0.5, power.shape[1] - 0.5))
    right.set_xlabel("diffusion timestep t")
    right.set_ylabel("spatial frequency |k| (cycles per image)")
    right.set_title("Power of ε_unlearned − ε_pretrained on forget images")
    fig.colorbar(image, ax=right, label="log10 mean power")
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
