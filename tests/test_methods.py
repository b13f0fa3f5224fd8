"""Each loss against a computation written directly from docs/methods.md, on tiny tensors."""

import numpy as np
import pytest
import torch

from pipeline.methods import REGISTRY, DDPMLoss, NaiveDeletion, ReTrack, make_method
from pipeline.training import Batch


class LinearNet(torch.nn.Module):
    """A stand-in for eps_theta with a diffusers-like interface: out = w * x + b * t / 1000."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.7))
        self.b = torch.nn.Parameter(torch.tensor(-0.3))

    def forward(self, x, t):
        out = self.w * x + self.b * (t.float() / 1000).view(-1, 1, 1, 1)
        return type("Out", (), {"sample": out})()


def alpha_bar(t):
    """Linear betas 1e-4 -> 0.02 over 1000 steps, from the formula."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    return np.cumprod(1 - betas)[t]


def test_ddpm_loss_matches_formula(scheduler):
    net, x = LinearNet(), torch.rand(3, 1, 4, 4) * 2 - 1
    torch.manual_seed(5)
    loss = DDPMLoss(scheduler)(net, Batch(retain=x))
    torch.manual_seed(5)  # the same draws, in the documented order: t, then eps
    t = torch.randint(0, 1000, (3,))
    eps = torch.randn_like(x)
    ab = torch.tensor(alpha_bar(t.numpy()), dtype=torch.float32).view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x + (1 - ab).sqrt() * eps
    pred = 0.7 * x_t - 0.3 * (t.float() / 1000).view(-1, 1, 1, 1)
    expected = np.mean([((pred[i] - eps[i]) ** 2).sum().item() for i in range(3)])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_naive_deletion_sees_only_retain(scheduler):
    method = NaiveDeletion(scheduler)
    assert method.needs == ("retain",)
    x = torch.rand(2, 1, 4, 4)
    torch.manual_seed(0)
    a = DDPMLoss(scheduler)(LinearNet(), Batch(retain=x))
    torch.manual_seed(0)
    b = method(LinearNet(), Batch(retain=x, forget=torch.full_like(x, 9.0)))
    assert a.item() == b.item()


def retrack_reference(pred, a, r, t, eps):
    """L_unlearn from methods.md 6, by explicit loops in float64."""
    total = 0.0
    for i in range(len(a)):
        ab = alpha_bar(int(t[i]))
        gamma, sigma = np.sqrt(ab), np.sqrt(1 - ab)
        a_t = gamma * a[i] + sigma * eps[i]
        v = [(a_t - gamma * r[i, j]) / sigma for j in range(r.shape[1])]
        logits = np.array([-(vj ** 2).sum() / 2 for vj in v])
        w = np.exp(logits - logits.max())
        w /= w.sum()
        total += sum(w[j] * ((pred[i] - v[j]) ** 2).sum() for j in range(len(v)))
    return total / len(a)


def test_retrack_unlearn_loss_matches_formula(scheduler):
    torch.manual_seed(1)
    a, r = torch.rand(3, 1, 4, 4) * 2 - 1, torch.rand(3, 5, 1, 4, 4) * 2 - 1
    net = LinearNet()
    method = ReTrack(scheduler, lam=0.3)
    torch.manual_seed(7)
    loss = method.unlearn_loss(net, a, r)
    torch.manual_seed(7)
    t = torch.randint(0, 1000, (3,))
    eps = torch.randn_like(a)
    ab = torch.tensor(alpha_bar(t.numpy()), dtype=torch.float32).view(-1, 1, 1, 1)
    a_t = ab.sqrt() * a + (1 - ab).sqrt() * eps
    pred = (0.7 * a_t - 0.3 * (t.float() / 1000).view(-1, 1, 1, 1)).detach()
    expected = retrack_reference(pred.double().numpy(), a.double().numpy(), r.double().numpy(), t.numpy(),
                                 eps.double().numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_retrack_total_is_lambda_mixture(scheduler):
    torch.manual_seed(2)
    batch = Batch(retain=torch.rand(2, 1, 4, 4), forget=torch.rand(2, 1, 4, 4), neighbours=torch.rand(2, 3, 1, 4, 4))
    method = ReTrack(scheduler, lam=0.25)
    torch.manual_seed(3)
    total = method(LinearNet(), batch)
    torch.manual_seed(3)
    unlearn = method.unlearn_loss(LinearNet(), batch.forget, batch.neighbours)
    retain = DDPMLoss(scheduler)(LinearNet(), batch)
    assert total.item() == pytest.approx(0.25 * unlearn.item() + 0.75 * retain.item(), rel=1e-6)


class FreeOutput(torch.nn.Module):
    """eps_theta whose output is a free parameter per example (ignores its input)."""

    def __init__(self, init):
        super().__init__()
        self.out = torch.nn.Parameter(init.clone())

    def forward(self, x, t):
        return type("Out", (), {"sample": self.out})()


def test_retrack_minimiser_is_posterior_mean_noise(scheduler):
    """With t and eps fixed, L_unlearn is minimised by sum_j w_j v_j (zero gradient there, and
    every perturbation increases the loss)."""
    torch.manual_seed(4)
    a, r = torch.rand(2, 1, 3, 3) * 2 - 1, torch.rand(2, 4, 1, 3, 3) * 2 - 1
    method = ReTrack(scheduler, lam=1.0)
    torch.manual_seed(11)
    t = torch.randint(0, 1000, (2,))
    eps = torch.randn_like(a)
    ab = torch.tensor(alpha_bar(t.numpy()), dtype=torch.float32).view(-1, 1, 1, 1, 1)
    gamma, sigma = ab.sqrt(), (1 - ab).sqrt()
    a_t = gamma[:, 0] * a + sigma[:, 0] * eps
    v = (a_t[:, None] - gamma * r) / sigma
    w = torch.softmax(-v.pow(2).flatten(2).sum(2) / 2, dim=1)
    optimum = (w[..., None, None, None] * v).sum(1)
    net = FreeOutput(optimum)
    torch.manual_seed(11)
    best = method.unlearn_loss(net, a, r)
    best.backward()
    assert net.out.grad.abs().max().item() < 1e-3 * max(1.0, optimum.abs().max().item())
    for _ in range(5):
        torch.manual_seed(11)
        worse = method.unlearn_loss(FreeOutput(optimum + 0.05 * torch.randn_like(optimum)), a, r)
        assert worse.item() > best.item()


def test_registry_builds_every_method_from_params(params, scheduler):
    for name in params["experiment"]["methods"]:
        method = make_method(name, params["methods"][name], scheduler)
        assert isinstance(method, REGISTRY[name])
    assert make_method("retrack", params["methods"]["retrack"], scheduler).lam == params["methods"]["retrack"]["lam"]
