"""Each loss against a computation written directly from docs/methods.md, on tiny tensors."""

import inspect

import numpy as np
import pytest
import torch

from pipeline.diffusion.models import noise_levels
from pipeline.methods import losses
from pipeline.methods.contract import Batch, ForgetTermMethod, Losses, Method
from pipeline.methods.losses import (
    SISS,
    DDPMLoss,
    EraseDiff,
    NaiveDeletion,
    NegGrad,
    ReTrack,
    SISSNoIS,
    rescaled_difference,
)
from pipeline.methods.registry import FILTER_KEYS, LOOP_KEYS, REGISTRY, make_method
from pipeline.params.validation import schema, with_forget_filter
from pipeline.training.loop import BatchSource, step_direction, train
from tests.conftest import alpha_bar


class LinearNet(torch.nn.Module):
    """A stand-in for eps_theta with a diffusers-like interface: out = w * x + b * t / 1000."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.7))
        self.b = torch.nn.Parameter(torch.tensor(-0.3))

    def forward(self, x, t):
        out = self.w * x + self.b * (t.float() / 1000).view(-1, 1, 1, 1)
        return type("Out", (), {"sample": out})()


def test_ddpm_loss_matches_formula(scheduler):
    net, x = LinearNet(), torch.rand(3, 1, 4, 4) * 2 - 1
    torch.manual_seed(5)
    loss = DDPMLoss(scheduler)(net, Batch(retain=x)).terms["loss"]
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
    a = DDPMLoss(scheduler)(LinearNet(), Batch(retain=x)).terms["loss"]
    torch.manual_seed(0)
    b = method(LinearNet(), Batch(retain=x, forget=torch.full_like(x, 9.0))).terms["loss"]
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
    a, r, x = torch.rand(3, 1, 4, 4) * 2 - 1, torch.rand(3, 5, 1, 4, 4) * 2 - 1, torch.rand(3, 1, 4, 4)
    net = LinearNet()
    method = ReTrack(scheduler, lam=0.3)
    torch.manual_seed(7)
    loss = method(net, Batch(retain=x, forget=a, neighbours=r)).stats["unlearn_loss"]
    torch.manual_seed(7)  # the forget batch's draws come first
    t = torch.randint(0, 1000, (3,))
    eps = torch.randn_like(a)
    ab = torch.tensor(alpha_bar(t.numpy()), dtype=torch.float32).view(-1, 1, 1, 1)
    a_t = ab.sqrt() * a + (1 - ab).sqrt() * eps
    pred = (0.7 * a_t - 0.3 * (t.float() / 1000).view(-1, 1, 1, 1)).detach()
    expected = retrack_reference(pred.double().numpy(), a.double().numpy(), r.double().numpy(), t.numpy(),
                                 eps.double().numpy())
    assert loss == pytest.approx(expected, rel=1e-4)


def test_retrack_one_unet_call_gives_the_two_calls_of_the_reference(scheduler, unet):
    """The loss and its gradient from one UNet call on the stacked batches equal those of a call on
    the forget batch and one on the retain batch (the reference code's two passes), same draws."""
    torch.manual_seed(2)
    a, x, r = torch.rand(4, 1, 8, 8) * 2 - 1, torch.rand(4, 1, 8, 8) * 2 - 1, torch.rand(4, 3, 1, 8, 8) * 2 - 1
    method = ReTrack(scheduler, lam=0.25)
    torch.manual_seed(3)
    joint = method(unet, Batch(retain=x, forget=a, neighbours=r)).terms["loss"]
    g_joint = torch.autograd.grad(joint, list(unet.parameters()))
    torch.manual_seed(3)
    t_a, eps_a = torch.randint(0, 1000, (4,)), torch.randn_like(a)
    t_x, eps_x = torch.randint(0, 1000, (4,)), torch.randn_like(x)
    (g_a, s_a), (g_x, s_x) = noise_levels(scheduler, t_a), noise_levels(scheduler, t_x)
    a_t = g_a * a + s_a * eps_a
    unlearn = method.unlearn_loss(unet(a_t, t_a).sample, a_t, t_a, r)
    retain = ((unet(g_x * x + s_x * eps_x, t_x).sample - eps_x) ** 2).flatten(1).sum(1).mean()
    separate = 0.25 * unlearn + 0.75 * retain
    g_separate = torch.autograd.grad(separate, list(unet.parameters()))
    assert joint.item() == pytest.approx(separate.item(), rel=1e-5)
    for one, two in zip(g_joint, g_separate):
        torch.testing.assert_close(one, two, rtol=1e-4, atol=1e-6)


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
    batch = Batch(retain=torch.zeros_like(a), forget=a, neighbours=r)  # lam = 1: the retain half weighs nothing

    def loss(out):
        net = FreeOutput(torch.cat([out, torch.zeros_like(out)]))
        torch.manual_seed(11)
        return net, method(net, batch).terms["loss"]

    net, best = loss(optimum)
    best.backward()
    assert net.out.grad.abs().max().item() < 1e-3 * max(1.0, optimum.abs().max().item())
    for _ in range(5):
        assert loss(optimum + 0.05 * torch.randn_like(optimum))[1].item() > best.item()


def test_registry_builds_every_method_from_params(params, scheduler):
    for name in params["experiment"]["methods"]:
        method = make_method(name, params["methods"][name], scheduler)
        assert isinstance(method, REGISTRY[name])
    assert make_method("retrack", params["methods"]["retrack"], scheduler).lam == params["methods"]["retrack"]["lam"]


# --- the methods with two gradients, NegGrad, and the loop's accumulation ---------------------------


@pytest.fixture
def per_example_randomness(monkeypatch):
    """Replace the methods' random draws by fixed functions of each example, so that a batch
    split into micro-batches sees exactly the draws of the whole batch."""
    monkeypatch.setattr(losses, "random_timesteps",
                        lambda scheduler, like: (like.flatten(1).sum(1).abs() * 997).long() % 1000)
    monkeypatch.setattr(losses, "gaussian_like", lambda x: torch.sin(37 * x + 1))
    monkeypatch.setattr(losses, "uniform_like", lambda x: (torch.sin(11 * x) + 1) / 2)
    monkeypatch.setattr(losses, "coin_flips", lambda like, p: (like.flatten(1).sum(1) * 31).frac() < p)


def test_neggrad_is_negative_scaled_forget_loss(scheduler):
    a = torch.rand(3, 1, 4, 4)
    torch.manual_seed(8)
    loss = NegGrad(scheduler, superfactor=0.01)(LinearNet(), Batch(forget=a)).terms["loss"]
    torch.manual_seed(8)
    forget = DDPMLoss(scheduler)(LinearNet(), Batch(retain=a)).terms["loss"]
    assert loss.item() == pytest.approx(-0.01 * forget.item(), rel=1e-6)


def test_neggrad_ascends_the_forget_loss(params, scheduler, unet):
    images = (np.random.default_rng(0).random((10, 1, 8, 8)) * 255).astype(np.uint8)
    source = BatchSource(images, np.arange(5), np.arange(5, 10), np.zeros(5, dtype=np.int64), np.zeros((1, 2), int))
    forget = source.read(torch.arange(5, 10), "cpu")

    def forget_loss(net):
        torch.manual_seed(123)
        with torch.no_grad():
            return DDPMLoss(scheduler)(net, Batch(retain=forget)).terms["loss"].item()

    before = forget_loss(unet)
    after_net, _ = train(unet, NegGrad(scheduler, 1.0), source, steps=3, batch_size=5, lr=1e-3, seed=0)
    assert forget_loss(after_net) > before


def test_erasediff_terms_match_formula(scheduler, per_example_randomness):
    x, a = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    terms = EraseDiff(scheduler, eta=1e-3)(LinearNet(), Batch(retain=x, forget=a)).terms
    t = losses.random_timesteps(scheduler, x)  # shared t and eps, drawn for the retain batch
    eps = losses.gaussian_like(x)
    ab = torch.tensor(alpha_bar(t.numpy()), dtype=torch.float32).view(-1, 1, 1, 1)

    def err(z, target):
        z_t = ab.sqrt() * z + (1 - ab).sqrt() * eps
        pred = 0.7 * z_t - 0.3 * (t.float() / 1000).view(-1, 1, 1, 1)
        return ((pred - target) ** 2).flatten(1).sum(1).mean().item()

    assert terms["retain"].item() == pytest.approx(err(x, eps), rel=1e-5)
    assert terms["forget"].item() == pytest.approx(err(a, losses.uniform_like(a)), rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_erasediff_update_keeps_forget_progress(scheduler, seed):
    eta = 1e-3
    gen = torch.Generator().manual_seed(seed)
    g_a = torch.randn(50, generator=gen, dtype=torch.float64)  # float64: <g, g_a> is a small difference
    g_x = -3 * g_a + 0.1 * torch.randn(50, generator=gen, dtype=torch.float64)  # raw gradients oppose
    g, stats = EraseDiff(scheduler, eta).combine({"retain": g_x, "forget": g_a})
    assert (g @ g_a).item() >= eta * g_a.pow(2).sum().item() * (1 - 1e-5)
    expected = eta - (g_x @ g_a) / g_a.pow(2).sum()
    assert stats["coefficient"] == pytest.approx(expected.item(), rel=1e-5)
    aligned, stats = EraseDiff(scheduler, eta).combine({"retain": g_a, "forget": g_a})
    assert torch.equal(aligned, g_a) and stats["coefficient"] == 0  # already >= eta: unchanged
    zero, _ = EraseDiff(scheduler, eta).combine({"retain": g_x, "forget": torch.zeros(50, dtype=torch.float64)})
    assert torch.equal(zero, g_x)


def test_siss_rescales_forget_gradient_to_scaling_norm():
    g_x, g_a = torch.randn(40), torch.randn(40) * 123.0
    g, factor = rescaled_difference(g_x, g_a, scaling_norm=5.0)
    assert (g_x - g).norm().item() == pytest.approx(5.0, rel=1e-5)
    assert torch.allclose((g_x - g) / (g_x - g).norm(), g_a / g_a.norm(), atol=1e-6)  # same direction
    assert factor == pytest.approx(5.0 / g_a.norm().item(), rel=1e-5)
    g, factor = rescaled_difference(g_x, torch.zeros(40), scaling_norm=5.0)
    assert torch.equal(g, g_x) and factor == 0.0


def test_siss_weights_match_formula(scheduler):
    d_x = torch.tensor([0.0, 1.0, 3.0, 10.0], dtype=torch.float64)
    d_a = torch.tensor([2.0, 1.0, 0.5, 9.0], dtype=torch.float64)
    for lam in (0.0, 0.3, 0.5, 1.0):
        log_w_x, log_w_a = SISS(scheduler, lam, 5.0).log_weights(d_x, d_a)
        w_x = 1 / ((1 - lam) + lam * np.exp((d_x - d_a).numpy()))
        w_a = 1 / ((1 - lam) * np.exp((d_a - d_x).numpy()) + lam)
        np.testing.assert_allclose(log_w_x.exp().numpy(), w_x, rtol=1e-12)
        np.testing.assert_allclose(log_w_a.exp().numpy(), w_a, rtol=1e-12)


def test_siss_terms_match_formula(scheduler, per_example_randomness):
    x, a = torch.rand(4, 1, 4, 4), torch.rand(4, 1, 4, 4)
    lam = 0.5
    terms = SISS(scheduler, lam, 5.0)(LinearNet(), Batch(retain=x, forget=a)).terms
    t, eps = losses.random_timesteps(scheduler, x), losses.gaussian_like(x)
    choose_a = losses.coin_flips(x, lam)
    assert 0 < choose_a.sum() < 4  # the check below covers both kinds of mixture sample
    expected_x, expected_a = [], []
    for i in range(4):
        ab = alpha_bar(int(t[i]))
        gamma, sigma = np.sqrt(ab), np.sqrt(1 - ab)
        xi, ai, ei = x[i].double().numpy(), a[i].double().numpy(), eps[i].double().numpy()
        m = gamma * (ai if choose_a[i] else xi) + sigma * ei
        pred = 0.7 * m - 0.3 * int(t[i]) / 1000
        d_x = ((m - gamma * xi) ** 2).sum() / (2 * sigma**2)
        d_a = ((m - gamma * ai) ** 2).sum() / (2 * sigma**2)
        w_x = 1 / ((1 - lam) + lam * np.exp(d_x - d_a))
        w_a = 1 / ((1 - lam) * np.exp(d_a - d_x) + lam)
        expected_x.append(w_x * ((pred - (m - gamma * xi) / sigma) ** 2).sum())
        expected_a.append(w_a * ((pred - (m - gamma * ai) / sigma) ** 2).sum())
    assert terms["retain"].item() == pytest.approx(np.mean(expected_x), rel=1e-4)
    assert terms["forget"].item() == pytest.approx(np.mean(expected_a), rel=1e-4)


class CountingNet(LinearNet):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t):
        self.calls += 1
        return super().forward(x, t)


def test_siss_one_forward_pass_siss_no_is_two(scheduler):
    batch = Batch(retain=torch.rand(3, 1, 4, 4), forget=torch.rand(3, 1, 4, 4))
    net = CountingNet()
    step_direction(net, SISS(scheduler, 0.5, 5.0), [batch])
    assert net.calls == 1
    net = CountingNet()
    step_direction(net, SISSNoIS(scheduler, 5.0), [batch])
    assert net.calls == 2


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 256, 256)])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("t", [0, 999])
def test_siss_stays_finite_at_the_extremes(scheduler, monkeypatch, shape, lam, t):
    monkeypatch.setattr(losses, "random_timesteps", lambda s, like: torch.full((len(like),), t))
    torch.manual_seed(0)
    batch = Batch(retain=torch.rand(2, *shape) * 2 - 1, forget=torch.rand(2, *shape) * 2 - 1)
    siss = SISS(scheduler, lam, 5.0)
    losses_ = siss(LinearNet(), batch)
    assert all(torch.isfinite(v) for v in losses_.terms.values())
    assert all(np.isfinite(v) for v in losses_.stats.values())
    direction, record = step_direction(LinearNet(), siss, [batch])
    assert torch.isfinite(direction).all() and all(np.isfinite(v) for v in record.values())


HYPERPARAMETERS = {"naive": {}, "neggrad": {"superfactor": 0.5}, "erasediff": {"eta": 1e-3},
                   "siss": {"lam": 0.5, "scaling_norm": 5.0}, "siss_no_is": {"scaling_norm": 5.0},
                   "retrack": {"lam": 0.3}}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_accumulating_micro_batches_equals_one_larger_batch(scheduler, per_example_randomness, name):
    torch.manual_seed(0)
    x, a, nb = torch.rand(6, 1, 4, 4), torch.rand(6, 1, 4, 4), torch.rand(6, 3, 1, 4, 4)
    whole = [Batch(retain=x, forget=a, neighbours=nb)]
    split = [Batch(retain=x[i:i + 2], forget=a[i:i + 2], neighbours=nb[i:i + 2]) for i in (0, 2, 4)]
    one, _ = step_direction(LinearNet(), make_method(name, HYPERPARAMETERS[name], scheduler), whole)
    three, _ = step_direction(LinearNet(), make_method(name, HYPERPARAMETERS[name], scheduler), split)
    assert torch.allclose(one, three, rtol=1e-5, atol=1e-6)


def reference_terms(name, net, x, a, nb, hp, scheduler, eps_theta=None):
    """Each method's loss terms written directly from docs/methods.md, as functions of the net's
    parameters (so autograd gives the reference gradients); eps_theta(z, t) is LinearNet's
    formula unless given."""

    def levels(t):
        ab = torch.tensor(alpha_bar(t.numpy()), dtype=torch.float32).view(-1, 1, 1, 1)
        return ab.sqrt(), (1 - ab).sqrt()

    eps_theta = eps_theta or (lambda z, t: net.w * z + net.b * (t.float() / 1000).view(-1, 1, 1, 1))

    def sq(p, q):
        return ((p - q) ** 2).flatten(1).sum(1)

    def ddpm(z):
        t, eps = losses.random_timesteps(scheduler, z), losses.gaussian_like(z)
        g, s = levels(t)
        return sq(eps_theta(g * z + s * eps, t), eps).mean()

    t, eps = losses.random_timesteps(scheduler, x), losses.gaussian_like(x)  # shared by the pair
    g, s = levels(t)
    if name == "naive":
        return {"loss": ddpm(x)}
    if name == "neggrad":
        return {"loss": -hp["superfactor"] * ddpm(a)}
    if name == "erasediff":
        return {"retain": sq(eps_theta(g * x + s * eps, t), eps).mean(),
                "forget": sq(eps_theta(g * a + s * eps, t), losses.uniform_like(a)).mean()}
    if name == "siss_no_is":
        return {"retain": sq(eps_theta(g * x + s * eps, t), eps).mean(),
                "forget": sq(eps_theta(g * a + s * eps, t), eps).mean()}
    if name == "siss":
        lam = hp["lam"]
        m = g * torch.where(losses.coin_flips(x, lam).view(-1, 1, 1, 1), a, x) + s * eps
        d_x, d_a = (sq(m, g * x) / (2 * s.flatten() ** 2)).detach(), (sq(m, g * a) / (2 * s.flatten() ** 2)).detach()
        w_x = 1 / ((1 - lam) + lam * torch.exp(d_x - d_a))
        w_a = 1 / ((1 - lam) * torch.exp(d_a - d_x) + lam)
        pred = eps_theta(m, t)
        return {"retain": (w_x * sq(pred, (m - g * x) / s)).mean(), "forget": (w_a * sq(pred, (m - g * a) / s)).mean()}
    ta, ea = losses.random_timesteps(scheduler, a), losses.gaussian_like(a)  # retrack: own t, eps
    ga, sa = levels(ta)
    a_t = ga * a + sa * ea
    v = [((a_t - ga * nb[:, j]) / sa).detach() for j in range(nb.shape[1])]
    w = torch.softmax(torch.stack([-(vj ** 2).flatten(1).sum(1) / 2 for vj in v], 1), 1)
    unlearn = sum(w[:, j] * sq(eps_theta(a_t, ta), v[j]) for j in range(len(v))).mean()
    return {"loss": hp["lam"] * unlearn + (1 - hp["lam"]) * ddpm(x)}


def reference_direction(name, terms, net, hp):
    params = list(net.parameters())
    grads = {k: torch.stack(torch.autograd.grad(v, params, retain_graph=True)) for k, v in terms.items()}
    if "loss" in grads:
        return grads["loss"]
    g_x, g_a = grads["retain"], grads["forget"]
    if name == "erasediff":
        return g_x + max(hp["eta"] - (g_x @ g_a).item() / (g_a @ g_a).item(), 0.0) * g_a
    return g_x - hp["scaling_norm"] / g_a.norm() * g_a


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_loss_and_direction_match_the_definitions(scheduler, per_example_randomness, name):
    torch.manual_seed(1)
    x, a, nb = torch.rand(4, 1, 3, 3) * 2 - 1, torch.rand(4, 1, 3, 3) * 2 - 1, torch.rand(4, 3, 1, 3, 3) * 2 - 1
    batch = Batch(retain=x, forget=a, neighbours=nb)
    hp = HYPERPARAMETERS[name]
    direction, record = step_direction(LinearNet(), make_method(name, hp, scheduler), [batch])
    net = LinearNet()
    terms = reference_terms(name, net, x, a, nb, hp, scheduler)
    for term, value in terms.items():
        assert record[term] == pytest.approx(value.item(), rel=1e-4), term
    torch.testing.assert_close(direction, reference_direction(name, terms, net, hp), rtol=1e-4, atol=1e-6)


def test_registry_and_schema_agree():
    """Each registered method has its params section, whose own keys are its constructor's keyword
    arguments, and the forget filter's keys exactly when it has a forget term."""
    sections = schema()["properties"]["methods"]["properties"]
    assert list(sections) == list(REGISTRY)
    for name, cls in REGISTRY.items():
        keys = set(sections[name]["properties"]) - set(LOOP_KEYS)
        own = set(inspect.signature(cls.__init__).parameters) - {"self", "scheduler", "forget_filter"}
        assert keys - set(FILTER_KEYS) == own, name
        assert (set(FILTER_KEYS) <= keys) == issubclass(cls, ForgetTermMethod) == with_forget_filter(name), name
        loop = {"steps", "batch_size", "lr", "betas", "weight_decay", "eps"}
        assert set(sections[name]["required"]) == loop | own, name


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_keeps_the_contract(name, params, scheduler):
    """A method declares what it draws and returns its losses and their figures, never keeps them."""
    method = make_method(name, params["methods"][name], scheduler)
    assert isinstance(method, Method) and set(method.needs) <= {"retain", "forget"}
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    batch = Batch(retain=x, forget=x.flip(0), neighbours=torch.stack([x] * 2, 1))
    out = method(LinearNet(), batch)
    assert isinstance(out, Losses) and all(v.dim() == 0 for v in out.terms.values())
    assert all(isinstance(v, float) for v in out.stats.values())
    grads = {term: torch.ones(3) for term in out.terms}
    direction, figures = method.combine(grads)
    assert direction.shape == (3,) and isinstance(figures, dict)
    assert not any(isinstance(v, dict) for v in vars(method).values())  # no figures left on the object
