"""The forget filter, time and frequency (pipeline/methods/filters.py), against numpy computations
written from the operator in its module docstring, and the methods that use it
(pipeline/methods/losses.py)."""

import copy
import csv
import io

import numpy as np
import pytest
import torch

from pipeline.diffusion.models import build_unet
from pipeline.errors import UserError
from pipeline.methods import losses, registry
from pipeline.methods.contract import Batch, Losses, Method
from pipeline.methods.filters import ForgetFilter
from pipeline.methods.registry import make_method
from pipeline.params.validation import validate
from pipeline.training.loop import BatchSource, train
from tests.conftest import alpha_bar

T = 1000
WITH_FORGET_TERM = ["neggrad", "erasediff", "siss", "siss_no_is", "retrack"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- numpy references ------------------------------------------------------------------------------


def np_radius(h, w):
    """|k| of the signed integer frequencies in the unshifted FFT layout, (H, W)."""
    ky = np.fft.fftfreq(h) * h
    kx = np.fft.fftfreq(w) * w
    return np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)


def np_mask(h, w, r):
    return (np_radius(h, w) <= r + 1e-9).astype(np.float64)


def np_low_pass(x, radii):
    """F^-1(M . F(x)) per example, x (B, ..., H, W) float64, one radius per example."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for b, r in enumerate(radii):
        f = np.fft.fft2(x[b], norm="ortho") * np_mask(*x.shape[-2:], r)
        out[b] = np.fft.ifft2(f, norm="ortho").real
    return out


def sinusoid(h, w, ky, kx, amp, phase):
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return amp * np.cos(2 * np.pi * (ky * y / h + kx * x / w) + phase)


def sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def soft_s(t, t1, t2, tau):
    t = np.asarray(t, dtype=np.float64)
    return sigmoid((t - t1) / tau) * sigmoid((t2 - t) / tau)


# --- the frequency filter ----------------------------------------------------------------------------

# (ky, kx) with |ky| < H/2, |kx| < W/2 (no aliasing), and (0, 0) for the mean
COMPONENTS = {
    (16, 16): [(0, 0), (0, 1), (1, -1), (2, 0), (1, 2), (-3, 2), (3, 3), (0, 5), (4, -6), (7, 7)],
    (8, 12): [(0, 0), (1, 0), (0, 1), (1, 1), (2, -3), (3, 2), (-1, 5), (3, 5)],
}


def sinusoid_batch(h, w, rng, batch=2, channels=2):
    """Images (B, C, H, W) as sums of the COMPONENTS with random amplitudes and phases; returns the
    images and, per component, its part (B, C, H, W)."""
    parts = {}
    for ky, kx in COMPONENTS[(h, w)]:
        part = np.zeros((batch, channels, h, w))
        for b in range(batch):
            for c in range(channels):
                phase = 0.0 if (ky, kx) == (0, 0) else rng.uniform(0, 2 * np.pi)
                part[b, c] = sinusoid(h, w, ky, kx, rng.uniform(0.5, 1.5), phase)
        parts[(ky, kx)] = part
    return sum(parts.values()), parts


@pytest.mark.parametrize("shape", [(16, 16), (8, 12)])
@pytest.mark.parametrize("radius", [0, 1, 1.5, 2, 3, 4.5, 5.5, 7.5, 10])
def test_low_pass_keeps_exactly_the_components_within_the_radius(rng, shape, radius):
    h, w = shape
    images, parts = sinusoid_batch(h, w, rng)
    kept = sum(p for (ky, kx), p in parts.items() if np.hypot(ky, kx) <= radius)
    forget_filter = ForgetFilter(T, frequency={"radius": radius})
    x, t = torch.tensor(images, dtype=torch.float32), torch.zeros(2, dtype=torch.long)
    out = forget_filter.low_pass(x, t)
    assert out.dtype == torch.float32 and not out.is_complex() and out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), kept, atol=1e-5)
    # Parseval: the selected squared norm is the energy of the kept part
    np.testing.assert_allclose(forget_filter.sq_norm(x, t).numpy(), (kept**2).sum(axis=(1, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("shape", [(16, 16), (8, 12)])
def test_low_pass_limits(rng, shape):
    h, w = shape
    x = torch.tensor(rng.normal(size=(3, 2, h, w)), dtype=torch.float32)
    t = torch.tensor([0, 500, 999])
    everything = np_radius(h, w).max()
    out = ForgetFilter(T, frequency={"radius": float(everything)}).low_pass(x, t)
    np.testing.assert_allclose(out.numpy(), x.numpy(), atol=1e-5)
    images, parts = sinusoid_batch(h, w, rng)  # radius >= the highest component: the input itself
    top = max(np.hypot(ky, kx) for ky, kx in parts)
    out = ForgetFilter(T, frequency={"radius": top}).low_pass(torch.tensor(images, dtype=torch.float32),
                                                                 torch.zeros(2, dtype=torch.long))
    np.testing.assert_allclose(out.numpy(), images, atol=1e-5)
    dc = ForgetFilter(T, frequency={"radius": 0}).low_pass(x, t).numpy()  # only the mean survives
    np.testing.assert_allclose(dc, np.broadcast_to(x.numpy().mean(axis=(2, 3), keepdims=True), x.shape), atol=1e-6)


def test_sq_norm_without_frequency_is_the_plain_squared_norm(rng):
    x = torch.tensor(rng.normal(size=(3, 2, 8, 12)), dtype=torch.float32)
    t = torch.tensor([0, 1, 2])
    plain = ForgetFilter(T).sq_norm(x, t)
    np.testing.assert_allclose(plain.numpy(), (x.double().numpy() ** 2).sum(axis=(1, 2, 3)), rtol=1e-6)
    assert torch.equal(ForgetFilter(T, time={"window": [0, 9]}).sq_norm(x, t), plain)
    # five dimensions: (B, K, C, H, W) -> (B, K), filtered per example b with its t
    y = rng.normal(size=(3, 4, 2, 8, 8))
    sel = ForgetFilter(T, frequency={"radius": 1.0, "radius_at_T": 3.0})
    out = sel.sq_norm(torch.tensor(y, dtype=torch.float32), torch.tensor([0, 500, 999]))
    radii = [1.0 + 2.0 * t / (T - 1) for t in (0, 500, 999)]
    np.testing.assert_allclose(out.numpy(), (np_low_pass(y, radii) ** 2).sum(axis=(2, 3, 4)), rtol=1e-5)
    assert out.shape == (3, 4)


@pytest.mark.parametrize("r0, r1", [(1.0, 5.0), (6.0, 0.5)])
@pytest.mark.parametrize("shape", [(16, 16), (8, 12)])
def test_radius_at_T_mask_per_example(rng, r0, r1, shape):
    h, w = shape
    steps = [0, 333, 500, T - 1]
    radii = [r0 + (r1 - r0) * t / (T - 1) for t in steps]
    lattice = np.unique(np_radius(h, w))
    assert all(np.abs(lattice - r).min() > 1e-4 or r in (r0, r1) for r in radii)  # no rounding ambiguity
    sel = ForgetFilter(T, frequency={"radius": r0, "radius_at_T": r1})
    mask = sel.mask(torch.tensor(steps), h, w)
    assert mask.shape == (len(steps), 1, h, w)
    for i, r in enumerate(radii):
        np.testing.assert_array_equal(mask[i, 0].numpy(), np_mask(h, w, r), err_msg=f"t={steps[i]}")
    assert not np.array_equal(np_mask(h, w, radii[0]), np_mask(h, w, radii[-1]))  # the masks do differ
    x = rng.normal(size=(len(steps), 2, h, w))
    out = sel.low_pass(torch.tensor(x, dtype=torch.float32), torch.tensor(steps))
    np.testing.assert_allclose(out.numpy(), np_low_pass(x, radii), atol=1e-5)


# --- the time window ---------------------------------------------------------------------------------


def test_hard_window_draws_only_inside(rng):
    sel = ForgetFilter(T, time={"window": [10, 13]})
    torch.manual_seed(0)
    t = sel.timesteps(torch.zeros(4000, 1, 2, 2))
    assert t.dtype == torch.long and t.shape == (4000,)
    assert t.min().item() == 10 and t.max().item() == 13  # inside, and both ends occur
    counts = np.bincount(t.numpy() - 10, minlength=4)
    assert np.all(np.abs(counts - 1000) < 150)  # uniform on the window
    t = ForgetFilter(T, time={"window": [250, 749], "soft": None}).timesteps(torch.zeros(20000))
    assert 250 <= t.min().item() and t.max().item() <= 749


def test_without_window_timesteps_are_uniform_over_all_of_T():
    torch.manual_seed(1)
    t = ForgetFilter(T).timesteps(torch.zeros(100000))
    torch.manual_seed(1)
    assert torch.equal(t, torch.randint(0, T, (100000,)))  # the unmodified method's draw
    assert t.min().item() == 0 and t.max().item() == T - 1
    soft = ForgetFilter(T, time={"window": [10, 13], "soft": 5.0})  # soft keeps t's distribution
    torch.manual_seed(1)
    assert torch.equal(soft.timesteps(torch.zeros(100000)), t)


@pytest.mark.parametrize("window", [[0, 999], [10, 13], [250, 749], [999, 999]])
def test_hard_window_weights(window):
    t1, t2 = window
    sel = ForgetFilter(T, time={"window": window})
    t = torch.arange(T)
    assert sel.weights(t, drawn_in_window=True) is None
    w = sel.weights(t, drawn_in_window=False)
    tt = np.arange(T)
    expected = ((tt >= t1) & (tt <= t2)) * T / (t2 - t1 + 1)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    assert w.double().mean().item() == pytest.approx(1.0, rel=1e-6)
    assert ForgetFilter(T).weights(t, drawn_in_window=False) is None


@pytest.mark.parametrize("window, tau", [([200, 600], 25.0), ([0, 99], 3.0), ([900, 999], 0.5), ([400, 410], 40.0)])
def test_soft_window_weights(window, tau):
    t1, t2 = window
    sel = ForgetFilter(T, time={"window": window, "soft": tau})
    t = torch.arange(T)
    s = soft_s(np.arange(T), t1, t2, tau)
    for drawn in (True, False):
        w = sel.weights(t, drawn_in_window=drawn)
        assert w.dtype == torch.float32
        np.testing.assert_allclose(w.numpy(), s / s.mean(), rtol=2e-6, atol=1e-7)
        assert w.double().mean().item() == pytest.approx(1.0, abs=1e-5)
    picked = torch.tensor([t2, t1, 5, t2])  # indexing by an arbitrary batch of t
    np.testing.assert_allclose(sel.weights(picked, True).numpy(), (s / s.mean())[picked.numpy()], rtol=2e-6)


def test_small_tau_approaches_the_hard_window():
    t1, t2 = 300, 500
    w = ForgetFilter(T, time={"window": [t1, t2], "soft": 0.01}).weights(torch.arange(T), True).double().numpy()
    tt = np.arange(T)
    inside = (tt > t1) & (tt < t2)
    outside = (tt < t1) | (tt > t2)
    normalised = w / w[inside].mean()
    np.testing.assert_allclose(normalised[inside], 1.0, rtol=1e-6)
    np.testing.assert_allclose(normalised[outside], 0.0, atol=1e-6)
    np.testing.assert_allclose(normalised[[t1, t2]], 0.5, rtol=1e-4)  # sigmoid(0) = 1/2 at the two edges
    hard = ForgetFilter(T, time={"window": [t1, t2]}).weights(torch.arange(T), False).double().numpy()
    differ = np.flatnonzero(~np.isclose(normalised, hard / hard.max(), atol=1e-6))
    assert differ.tolist() == [t1, t2]  # up to normalisation, only the two edges differ


def test_validate_names_the_method_window(params):
    ok = copy.deepcopy(params)
    ok["methods"]["retrack"].update(time={"window": [0, T - 1], "soft": None}, frequency={"radius": 2})
    validate(ok)


@pytest.mark.parametrize("window", [[0, T], [6, 5], [T, T]])
def test_window_outside_range_names_the_key(params, window):
    bad = copy.deepcopy(params)
    bad["methods"]["retrack"]["time"] = {"window": window, "soft": None}
    with pytest.raises(UserError) as info:
        validate(bad)
    assert "methods.retrack.time.window" in str(info.value)


# --- filter off: bit-identical to the unmodified methods ------------------------------------------


def levels(scheduler, t):
    ab = scheduler.alphas_cumprod[t].float()
    return ab.sqrt().view(-1, 1, 1, 1), (1 - ab).sqrt().view(-1, 1, 1, 1)


def sq(p, q):
    return (p - q).pow(2).flatten(1).sum(1)


def neggrad_reference(net, scheduler, batch, s):
    """-s * mean ||eps_theta(gamma a + sigma eps, t) - eps||^2, t ~ U{0..T-1} then eps ~ N(0, I)."""
    a = batch.forget
    t = torch.randint(0, T, (len(a),))
    eps = torch.randn_like(a)
    g, sg = levels(scheduler, t)
    return -s * sq(net(g * a + sg * eps, t).sample, eps).mean()


def retrack_reference(net, scheduler, batch, lam):
    """lam * L_unlearn (own t, eps for a) + (1 - lam) * DDPM loss on x (then its own t, eps)."""
    a, nb, x = batch.forget, batch.neighbours, batch.retain
    t = torch.randint(0, T, (len(a),))
    eps = torch.randn_like(a)
    g, sg = levels(scheduler, t)
    a_t = g * a + sg * eps
    with torch.no_grad():
        v = (a_t[:, None] - g[:, None] * nb) / sg[:, None]
        w = torch.softmax(-v.pow(2).flatten(2).sum(2) / 2, dim=1)
    pred = net(a_t, t).sample
    unlearn = (w * (pred[:, None] - v).pow(2).flatten(2).sum(2)).sum(1).mean()
    t_x = torch.randint(0, T, (len(x),))
    eps_x = torch.randn_like(x)
    g, sg = levels(scheduler, t_x)
    retain = sq(net(g * x + sg * eps_x, t_x).sample, eps_x).mean()
    return lam * unlearn + (1 - lam) * retain


def two_pass_reference(net, scheduler, batch, uniform_target):
    """EraseDiff (forget target u ~ U[0, 1)) and SISS-no-IS (target eps): shared t, eps."""
    x, a = batch.retain, batch.forget
    t = torch.randint(0, T, (len(x),))
    eps = torch.randn_like(x)
    g, sg = levels(scheduler, t)
    retain = sq(net(g * x + sg * eps, t).sample, eps).mean()
    target = torch.rand_like(a) if uniform_target else eps
    return {"retain": retain, "forget": sq(net(g * a + sg * eps, t).sample, target).mean()}


def siss_reference(net, scheduler, batch, lam):
    """SISS from methods.md 4 with the plain (ratio) weights in float64."""
    x, a = batch.retain, batch.forget
    t = torch.randint(0, T, (len(x),))
    eps = torch.randn_like(x)
    coin = torch.rand(len(x)) < lam
    g, sg = levels(scheduler, t)
    m = g * torch.where(coin.view(-1, 1, 1, 1), a, x) + sg * eps
    pred = net(m, t).sample
    s2 = 2 * sg.flatten().double() ** 2
    d_x = (m - g * x).double().pow(2).flatten(1).sum(1) / s2
    d_a = (m - g * a).double().pow(2).flatten(1).sum(1) / s2
    w_x = (1 / ((1 - lam) + lam * torch.exp(d_x - d_a))).float()
    w_a = (1 / ((1 - lam) * torch.exp(d_a - d_x) + lam)).float()
    return {"retain": (w_x * sq(pred, (m - g * x) / sg)).mean(), "forget": (w_a * sq(pred, (m - g * a) / sg)).mean()}


def make_batch(b=4, k=3, seed=123):
    gen = torch.Generator().manual_seed(seed)
    return Batch(retain=torch.rand(b, 1, 8, 8, generator=gen) * 2 - 1,
                 forget=torch.rand(b, 1, 8, 8, generator=gen) * 2 - 1,
                 neighbours=torch.rand(b, k, 1, 8, 8, generator=gen) * 2 - 1)


def seeded(fn, seed, *args):
    """``fn(*args)`` after seeding; a method's loss terms as the references return them: the one
    term's tensor, or the dict of several."""
    torch.manual_seed(seed)
    out = fn(*args)
    return out.terms.get("loss", out.terms) if isinstance(out, Losses) else out


def same(u, v) -> bool:
    if isinstance(u, dict):
        return u.keys() == v.keys() and all(torch.equal(u[k], v[k]) for k in u)
    return torch.equal(u, v)


@pytest.mark.parametrize("name", WITH_FORGET_TERM)
def test_filter_off_is_bit_identical(params, scheduler, unet, name):
    cfg = params["methods"][name]
    assert "time" not in cfg and "frequency" not in cfg
    plain = make_method(name, cfg, scheduler)
    nulls = make_method(name, {**cfg, "time": None, "frequency": None}, scheduler)
    filtered = make_method(name, {**cfg, "frequency": {"radius": 1.0}}, scheduler)
    batch = make_batch()
    with torch.no_grad():
        for seed in (0, 1):
            a = seeded(plain, seed, unet, batch)
            b = seeded(nulls, seed, unet, batch)
            assert same(a, b)
            assert not same(a, seeded(filtered, seed, unet, batch))  # the comparison can tell them apart
            hp = {k: v for k, v in cfg.items() if k not in registry.LOOP_KEYS}
            if name == "neggrad":
                ref = seeded(neggrad_reference, seed, unet, scheduler, batch, hp["superfactor"])
            elif name == "retrack":  # one UNet call on both batches, the reference two: rounding apart
                ref = seeded(retrack_reference, seed, unet, scheduler, batch, hp["lam"])
                assert a.item() == pytest.approx(ref.item(), rel=1e-6)
                continue
            elif name in ("erasediff", "siss_no_is"):
                ref = seeded(two_pass_reference, seed, unet, scheduler, batch, name == "erasediff")
            else:
                ref = seeded(siss_reference, seed, unet, scheduler, batch, hp["lam"])
                for key in ("retain", "forget"):
                    assert a[key].item() == pytest.approx(ref[key].item(), rel=1e-5), key
                continue
            assert same(a, ref), (a, ref)


def tiny_source(rng, n=40, forget=6):
    images = rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8)
    neighbours = np.array([[0, 1, 2, 3], [10, 11, 12, 13]])
    return BatchSource(images, np.arange(n - forget), np.arange(n - forget, n), np.arange(forget) % 2, neighbours)


def flat(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def trained(params, objective, source, steps=2):
    torch.manual_seed(0)
    net, history = train(build_unet(params), objective, source, steps=steps, batch_size=4, lr=1e-3, seed=0)
    return net, list(csv.DictReader(io.StringIO(history)))


class Reference(Method):
    """A method for train() from a reference function of (net, batch) that returns one loss."""

    def __init__(self, fn, needs, *args):
        self.fn, self.needs, self.args = fn, needs, args

    def __call__(self, net, batch):
        return Losses({"loss": self.fn(net, *self.args[:1], batch, *self.args[1:])})


@pytest.mark.parametrize("name", WITH_FORGET_TERM)
def test_training_with_filter_off_is_bit_identical(params, scheduler, rng, name):
    source = tiny_source(rng)
    cfg = params["methods"][name]
    a, _ = trained(params, make_method(name, cfg, scheduler), source)
    b, _ = trained(params, make_method(name, {**cfg, "time": None, "frequency": None}, scheduler), source)
    assert torch.equal(flat(a), flat(b))
    if name == "neggrad":
        ref, _ = trained(params, Reference(neggrad_reference, ("forget",), scheduler, cfg["superfactor"]), source)
        assert torch.equal(flat(a), flat(ref))
    if name == "retrack":  # one UNet call on both batches, the reference two: equal up to rounding, which
        # Adam can blow up to a few % of its lr (1e-3) in a weight whose gradient is near zero
        ref, _ = trained(params, Reference(retrack_reference, ("retain", "forget"), scheduler, cfg["lam"]), source)
        torch.testing.assert_close(flat(a), flat(ref), rtol=1e-5, atol=2e-5)
    torch.manual_seed(0)
    assert not torch.equal(flat(a), flat(build_unet(params)))


# --- with a filter, the forget term follows the formula -------------------------------------------

FIXED_T = torch.tensor([3, 250, 600, 999])


def fixed_eps(x):
    return torch.sin(37 * x + 1)


@pytest.mark.parametrize("time, frequency", [
    (None, {"radius": 2.0}),
    (None, {"radius": 0.0}),
    ({"window": [200, 700], "soft": 40.0}, {"radius": 1.0, "radius_at_T": 4.0}),
    ({"window": [200, 700], "soft": 40.0}, None),
])
def test_neggrad_filtered_loss_matches_formula(scheduler, unet, monkeypatch, time, frequency):
    monkeypatch.setattr(losses, "random_timesteps", lambda s, like: FIXED_T[: len(like)])
    monkeypatch.setattr(losses, "gaussian_like", fixed_eps)
    s = 0.5
    method = make_method("neggrad", {"superfactor": s, "time": time, "frequency": frequency}, scheduler)
    a = make_batch().forget
    with torch.no_grad():
        out = method(unet, Batch(forget=a))
        loss = out.terms["loss"]
        eps = fixed_eps(a)
        ab = torch.tensor(alpha_bar(FIXED_T.numpy()), dtype=torch.float32).view(-1, 1, 1, 1)
        pred = unet(ab.sqrt() * a + (1 - ab).sqrt() * eps, FIXED_T).sample
    residual = (pred - eps).double().numpy()
    tt = FIXED_T.numpy()
    if frequency is None:
        per_example = (residual**2).sum(axis=(1, 2, 3))
    else:
        r0, r1 = frequency["radius"], frequency.get("radius_at_T")
        radii = [r0 if r1 is None else r0 + (r1 - r0) * t / (T - 1) for t in tt]
        per_example = (np_low_pass(residual, radii) ** 2).sum(axis=(1, 2, 3))
    if time is not None:
        s_all = soft_s(np.arange(T), *time["window"], time["soft"])
        per_example = per_example * s_all[tt] / s_all.mean()
    assert loss.item() == pytest.approx(-s * per_example.mean(), rel=1e-4)
    assert out.stats["forget_loss"] == pytest.approx(per_example.mean(), rel=1e-4)


class Recording(torch.nn.Module):
    """eps_theta that records the t of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, t):
        self.calls.append(t.clone())
        return self.inner(x, t)


# where the forget batch's t are among the t of the net's calls, one after another, in batches of b:
# the forget batch's index and the retain batch's (None: no retain term); ReTrack makes one call on both
PASSES = {"neggrad": (0, None), "retrack": (0, 1), "erasediff": (1, 0), "siss_no_is": (1, 0)}


@pytest.mark.parametrize("name", sorted(PASSES))
def test_hard_window_restricts_only_the_forget_pass(params, scheduler, unet, name):
    t1, t2 = 100, 140
    cfg = {**params["methods"][name], "time": {"window": [t1, t2], "soft": None}}
    net = Recording(unet)
    torch.manual_seed(0)
    with torch.no_grad():
        make_method(name, cfg, scheduler)(net, make_batch(b=64))
    forget, retain = PASSES[name]
    t = torch.cat(net.calls).view(-1, 64)
    assert len(t) == (1 if retain is None else 2)
    assert ((t[forget] >= t1) & (t[forget] <= t2)).all()
    assert len(set(t[forget].tolist())) > 10  # spread over the window
    if retain is not None:  # the retain term keeps t ~ U{0..T-1}
        assert ((t[retain] < t1) | (t[retain] > t2)).any()


def test_retrack_hard_window_and_radius_match_formula(scheduler, unet, monkeypatch):
    monkeypatch.setattr(losses, "gaussian_like", fixed_eps)
    t1, t2, r = 100, 140, 2.0
    method = make_method("retrack", {"lam": 1.0, "time": {"window": [t1, t2], "soft": None},
                                     "frequency": {"radius": r}}, scheduler)
    batch = make_batch(b=5, k=3)
    net = Recording(unet)
    torch.manual_seed(0)
    with torch.no_grad():
        loss = method(net, batch).terms["loss"]
    t = net.calls[0][:5]  # the forget batch's half of the one call
    assert ((t >= t1) & (t <= t2)).all()
    a, nb = batch.forget, batch.neighbours
    eps = fixed_eps(a)
    ab = alpha_bar(t.numpy())
    gamma = torch.tensor(np.sqrt(ab), dtype=torch.float32).view(-1, 1, 1, 1)
    sigma = torch.tensor(np.sqrt(1 - ab), dtype=torch.float32).view(-1, 1, 1, 1)
    a_t = gamma * a + sigma * eps
    with torch.no_grad():
        pred = unet(a_t, t).sample.double().numpy()
    expected = 0.0
    for i in range(len(a)):
        g, s = np.sqrt(ab[i]), np.sqrt(1 - ab[i])
        at = g * a[i].double().numpy() + s * eps[i].double().numpy()
        v = np.stack([(at - g * nb[i, j].double().numpy()) / s for j in range(nb.shape[1])])
        logits = -(v**2).sum(axis=(1, 2, 3)) / 2
        w = np.exp(logits - logits.max())
        w /= w.sum()
        filtered = np_low_pass(pred[i][None] - v, [r] * len(v))  # each neighbour's residual, low-passed
        expected += (w * (filtered**2).sum(axis=(1, 2, 3))).sum()
    assert loss.item() == pytest.approx(expected / len(a), rel=1e-4)


def test_siss_hard_window_weights_the_shared_t(scheduler, unet, monkeypatch):
    """SISS keeps one t for both terms; its forget term is weighted by 1[t1<=t<=t2] T / (t2-t1+1)."""
    t1, t2, lam = 200, 700, 0.5
    monkeypatch.setattr(losses, "random_timesteps", lambda s, like: FIXED_T[: len(like)])
    monkeypatch.setattr(losses, "gaussian_like", fixed_eps)
    monkeypatch.setattr(losses, "coin_flips", lambda like, p: torch.tensor([True, False, True, False]))
    batch = make_batch()
    plain = make_method("siss", {"lam": lam, "scaling_norm": 5.0}, scheduler)
    windowed = make_method("siss", {"lam": lam, "scaling_norm": 5.0, "time": {"window": [t1, t2], "soft": None}},
                           scheduler)
    with torch.no_grad():
        off, on = plain(unet, batch).terms, windowed(unet, batch).terms
        x, a, eps = batch.retain, batch.forget, fixed_eps(batch.retain)
        ab = alpha_bar(FIXED_T.numpy())
        g = torch.tensor(np.sqrt(ab), dtype=torch.float32).view(-1, 1, 1, 1)
        s = torch.tensor(np.sqrt(1 - ab), dtype=torch.float32).view(-1, 1, 1, 1)
        m = g * torch.where(torch.tensor([True, False, True, False]).view(-1, 1, 1, 1), a, x) + s * eps
        pred = unet(m, FIXED_T).sample.double().numpy()
    md, gd, sd = m.double().numpy(), np.sqrt(ab)[:, None, None, None], np.sqrt(1 - ab)[:, None, None, None]
    d_x = ((md - gd * x.double().numpy()) ** 2).sum(axis=(1, 2, 3)) / (2 * sd.ravel() ** 2)
    d_a = ((md - gd * a.double().numpy()) ** 2).sum(axis=(1, 2, 3)) / (2 * sd.ravel() ** 2)
    w_a = 1 / ((1 - lam) * np.exp(d_a - d_x) + lam)
    forget = w_a * ((pred - (md - gd * a.double().numpy()) / sd) ** 2).sum(axis=(1, 2, 3))
    inside = (FIXED_T.numpy() >= t1) & (FIXED_T.numpy() <= t2)
    assert 0 < inside.sum() < len(inside)
    assert off["forget"].item() == pytest.approx(forget.mean(), rel=1e-4)
    assert on["forget"].item() == pytest.approx((forget * inside * T / (t2 - t1 + 1)).mean(), rel=1e-4)
    assert torch.equal(on["retain"], off["retain"])  # the retain term is never touched


FILTERS = {
    "hard": {"time": {"window": [100, 600], "soft": None}, "frequency": {"radius": 2.0, "radius_at_T": None}},
    "soft": {"time": {"window": [100, 600], "soft": 30.0}, "frequency": {"radius": 1.0, "radius_at_T": 4.0}},
}


@pytest.mark.parametrize("kind", sorted(FILTERS))
@pytest.mark.parametrize("name", WITH_FORGET_TERM)
def test_every_method_trains_with_a_filter(params, scheduler, rng, name, kind):
    cfg = {**params["methods"][name], **FILTERS[kind]}
    checked = copy.deepcopy(params)
    checked["methods"][name] = cfg
    validate(checked)
    source = tiny_source(rng)
    net, rows = trained(params, make_method(name, cfg, scheduler), source)
    assert len(rows) == 2
    values = [float(v) for r in rows for k, v in r.items() if v != ""]
    assert np.all(np.isfinite(values))
    torch.manual_seed(0)
    before = flat(build_unet(params))
    assert torch.isfinite(flat(net)).all() and not torch.equal(flat(net), before)
    _, plain = trained(params, make_method(name, params["methods"][name], scheduler), source)
    assert rows != plain  # the filter changed the forget term (EraseDiff's direction may not change)
