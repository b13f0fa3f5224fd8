"""pipeline.evaluation.probes: the memorization probe's reconstructions and the loss-based membership attack."""

import types

import numpy as np
import pytest
import torch

from pipeline.evaluation.probes import denoising_losses, membership_auc, probe_timesteps, reconstruct
from tests.conftest import alpha_bar

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Oracle(torch.nn.Module):
    """eps(x_t, t) of the one image ``x0``: what a model that memorized only x0 predicts."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0 = x0
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, x, t):
        ab = torch.from_numpy(alpha_bar(t.long().numpy())).float().view(-1, 1, 1, 1)
        return types.SimpleNamespace(sample=(x - ab.sqrt() * self.x0) / (1 - ab).sqrt())


def test_probe_timesteps_are_evenly_spaced_from_t_down():
    assert probe_timesteps(250, 25) == list(range(250, 0, -10))
    assert probe_timesteps(250, 4) == [250, 188, 125, 62]
    assert probe_timesteps(3, 10) == [3, 2, 1]  # no repeats when steps > t


def test_a_model_that_memorized_an_image_reconstructs_it(scheduler, rng):
    x0 = torch.from_numpy(rng.uniform(-0.9, 0.9, (1, 1, 4, 4))).float()
    other = torch.from_numpy(rng.uniform(-0.9, 0.9, (1, 1, 4, 4))).float()
    noised, recon = reconstruct(Oracle(x0), scheduler, torch.cat([x0, other]), t=250, steps=5, draws=3, seed=0)
    assert noised.shape == recon.shape == (2, 3, 1, 4, 4)
    # the oracle's model returns x0 from the noised x0 and from the noised other image alike
    torch.testing.assert_close(recon, x0.expand(2, 3, 1, 4, 4), atol=1e-4, rtol=0)
    # the noised images are sqrt(abar_250) x + sqrt(1 - abar_250) z, with z of unit variance
    ab = float(alpha_bar(250))
    z = (noised - np.sqrt(ab) * torch.stack([x0, other])) / np.sqrt(1 - ab)
    assert z.std().item() == pytest.approx(1.0, abs=0.35)
    again, _ = reconstruct(Oracle(x0), scheduler, torch.cat([x0, other]), t=250, steps=5, draws=3, seed=0)
    assert torch.equal(noised, again)


def test_denoising_losses_match_the_formula(unet, scheduler, rng):
    images = torch.from_numpy(rng.uniform(-1, 1, (3, 1, 8, 8))).float()
    ours = denoising_losses(unet, scheduler, images, draws=4, seed=7, batch_size=2)
    g = torch.Generator().manual_seed(7)
    ts = torch.randint(0, 1000, (4,), generator=g)
    zs = torch.randn((4, 1, 8, 8), generator=g)
    want = np.zeros(3)
    with torch.no_grad():
        for i, x in enumerate(images):
            for t, z in zip(ts, zs):
                ab = float(alpha_bar(int(t)))
                noisy = np.sqrt(ab) * x + np.sqrt(1 - ab) * z
                eps = unet(noisy[None], t[None]).sample[0]
                want[i] += ((eps - z) ** 2).mean().item() / 4
    np.testing.assert_allclose(ours, want, rtol=1e-5)


def test_membership_auc_is_the_mann_whitney_statistic(rng):
    members = rng.normal(0.0, 1.0, 7).round(1)
    nonmembers = np.r_[rng.normal(0.5, 1.0, 9).round(1), members[:2]]  # ties count one half
    wins = [(m < n) + 0.5 * (m == n) for m in members for n in nonmembers]
    assert membership_auc(members, nonmembers) == pytest.approx(np.mean(wins))
    assert membership_auc(np.array([0.1]), np.array([0.2, 0.3])) == 1.0  # lower loss: a member
    assert membership_auc(np.array([0.4]), np.array([0.2, 0.3])) == 0.0
