"""The probability-flow NLL against the closed form for Gaussian data.

For x_0 ~ N(mu, Sigma) the VP marginal at t is N(alpha mu, S_t), S_t = alpha^2 Sigma + sigma^2 I, and
the optimal noise predictor is eps*(x, t) = sigma S_t^{-1} (x - alpha mu). The ODE is then linear: in
Sigma's eigenbasis x(t) - alpha(t) mu scales as S_t^{1/2}, so x(1) is known, and the method's output
is exactly log N(x(1); 0, I) + tr M with M = (log S_1 - log S_eps) / 2 = log p_eps(x) - log p_1(x(1)),
up to Hutchinson's error v^T M v - tr M (zero for diagonal Sigma, variance 2 sum_{i != j} M_ij^2).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from pipeline.errors import UserError
from pipeline.evaluation.likelihood import ProbabilityFlowNLL

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPS, SHAPE = 1e-5, (1, 2, 2)
D = math.prod(SHAPE)


def alpha(t):
    """alpha(t) of the VP-SDE with beta 0.1 -> 20 (linear betas 1e-4 -> 0.02 over 1000 steps)."""
    return np.exp(-(t**2) * (20 - 0.1) / 4 - t * 0.1 / 2)


def marginal_cov(cov: np.ndarray, t: float) -> np.ndarray:
    return alpha(t) ** 2 * cov + (1 - alpha(t) ** 2) * np.eye(len(cov))


class GaussianEps(torch.nn.Module):
    """The exact noise predictor eps*(x, t) of N(mu, cov) data, called like a UNet2DModel."""

    def __init__(self, mu: np.ndarray, cov: np.ndarray):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(mu), requires_grad=False)
        self.cov = torch.nn.Parameter(torch.tensor(cov), requires_grad=False)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> SimpleNamespace:
        t = timestep.double()[:, None] / 999
        a = torch.exp(-(t**2) * (20 - 0.1) / 4 - t * 0.1 / 2)  # (B, 1)
        cov_t = a[:, :, None] ** 2 * self.cov + (1 - a[:, :, None] ** 2) * torch.eye(D, dtype=torch.float64)
        centred = x.flatten(1).double() - a * self.mu
        eps = torch.sqrt(1 - a**2) * torch.linalg.solve(cov_t, centred)
        return SimpleNamespace(sample=eps.view_as(x).float())


def log_normal(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    centred = x - mean
    quad = np.einsum("bi,bi->b", centred, np.linalg.solve(cov, centred.T).T)
    return -0.5 * (quad + np.linalg.slogdet(cov)[1] + len(cov) * math.log(2 * math.pi))


def flow(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M = int_eps^1 (df/dx) dt = (log S_1 - log S_eps) / 2, and the flow map exp(M):

    x(1) - alpha(1) mu = exp(M) (x - alpha(eps) mu).
    """
    lam, q = np.linalg.eigh(cov)
    s_eps, s_1 = (alpha(t) ** 2 * lam + 1 - alpha(t) ** 2 for t in (EPS, 1.0))
    half_log_ratio = 0.5 * np.log(s_1 / s_eps)
    return q @ np.diag(half_log_ratio) @ q.T, q @ np.diag(np.exp(half_log_ratio)) @ q.T


def expected_bits(x: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """bits/dim of the exact ODE solution with the N(0, I) prior at t = 1 (Hutchinson's error aside)."""
    x1 = alpha(1.0) * mu + (x - alpha(EPS) * mu) @ flow(cov)[1].T
    log_p_eps = log_normal(x, alpha(EPS) * mu, marginal_cov(cov, EPS))
    log_p_1 = log_normal(x1, alpha(1.0) * mu, marginal_cov(cov, 1.0))
    log_prior = log_normal(x1, np.zeros(D), np.eye(D))
    assert np.all(np.abs(log_prior - log_p_1) / (D * math.log(2)) < 0.02)  # p_1 ~ N(0, I): alpha(1) = 0.0066
    return -(log_prior + log_p_eps - log_p_1) / (D * math.log(2)) + 7


def scheduler(**kwargs) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", **kwargs)


def images(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32).view(-1, *SHAPE)


MU = np.array([0.5, -0.3, 0.2, 0.8])
DIAG = np.diag([0.02, 0.1, 0.3, 0.6])
FULL = 0.2 * np.array([[1, .8, .3, 0], [.8, 1, .6, .2], [.3, .6, 1, .5], [0, .2, .5, 1]])


def test_diagonal_gaussian_matches_closed_form(rng):
    x = rng.multivariate_normal(MU, DIAG, size=5).astype(np.float32).astype(np.float64)
    x[0] = MU + 3 * np.sqrt(DIAG.diagonal())  # a far tail point
    result = ProbabilityFlowNLL()(GaussianEps(MU, DIAG), scheduler(), images(x))
    assert result["bits_per_dim"].shape == (5,)
    np.testing.assert_allclose(result["bits_per_dim"], expected_bits(x, MU, DIAG), atol=2e-4)


def test_full_covariance_hutchinson_estimate_is_unbiased(rng):
    x = rng.multivariate_normal(MU, FULL, size=16).astype(np.float32).astype(np.float64)
    net, expected = GaussianEps(MU, FULL), expected_bits(x, MU, FULL)
    errors = np.concatenate([ProbabilityFlowNLL(seed=seed)(net, scheduler(), images(x))["bits_per_dim"] - expected
                             for seed in range(4)])
    m = flow(FULL)[0]
    std = math.sqrt(2 * ((m**2).sum() - (np.diag(m) ** 2).sum())) / (D * math.log(2))  # of v^T M v - tr M
    divergence = np.trace(m) / (D * math.log(2))
    standard_error = std / math.sqrt(len(errors))
    assert abs(divergence) > 10 * standard_error  # the test can tell a dropped or sign-flipped divergence
    assert abs(errors.mean()) < 4 * standard_error
    assert 0.5 * std < errors.std() < 2 * std  # one random probe per image, not exact, not wilder


def test_nfe_grows_with_tighter_tolerances():
    x = images(MU[None])
    nfe = [ProbabilityFlowNLL(rtol=tol, atol=tol)(GaussianEps(MU, DIAG), scheduler(), x)["nfe"]
           for tol in (1e-3, 1e-5, 1e-7)]
    assert all(isinstance(n, int) and n > 0 for n in nfe)
    assert nfe[0] < nfe[1] < nfe[2]


def test_same_seed_same_result(rng):
    x = images(rng.multivariate_normal(MU, FULL, size=3))
    net = GaussianEps(MU, FULL)
    first, again, other = (ProbabilityFlowNLL(seed=s)(net, scheduler(), x)["bits_per_dim"] for s in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("kwargs, problem", [({"beta_schedule": "scaled_linear"}, "beta_schedule"),
                                             ({"prediction_type": "v_prediction"}, "prediction_type")])
def test_rejects_schedulers_other_than_linear_epsilon(kwargs, problem):
    bad = DDPMScheduler.from_config(scheduler().config, **kwargs)
    with pytest.raises(UserError, match=f"{problem}.*{next(iter(kwargs.values()))}"):
        ProbabilityFlowNLL()(GaussianEps(MU, DIAG), bad, images(MU[None]))


def test_tiny_unet_smoke():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 16), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1).eval()
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    result = ProbabilityFlowNLL(rtol=1e-3, atol=1e-3)(unet, scheduler(), x)
    assert result["bits_per_dim"].shape == (2,)
    assert np.all(np.isfinite(result["bits_per_dim"]))
    assert result["nfe"] > 0
    assert all(p.grad is None for p in unet.parameters())
