"""Diagnostics (pipeline/evaluation/diagnostics.py): radial spectrum, gradient norms, draws, the stage."""

import copy
import json

import numpy as np
import pytest
import torch
import yaml

from pipeline.artifacts import save_npz
from pipeline.diffusion.models import save_model
from pipeline.evaluation.diagnostics import diagnose, draws, gradient_norm, radial_power
from pipeline.stages import diagnostics as diagnostics_stage
from tests.conftest import alpha_bar

T = 1000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def np_radial_power(delta):
    """P(rho) = mean over examples, channels and frequencies k with round(|k|) = rho of
    |F(delta)_k|^2, F the orthonormal 2-D DFT, k the signed integer frequencies."""
    delta = np.asarray(delta, dtype=np.float64)
    h, w = delta.shape[-2:]
    k = np.sqrt((np.fft.fftfreq(h) * h)[:, None] ** 2 + (np.fft.fftfreq(w) * w)[None, :] ** 2)
    rho = np.rint(k).astype(int)
    power = (np.abs(np.fft.fft2(delta, norm="ortho")) ** 2).mean(axis=(0, 1))
    return np.array([power[rho == r].mean() for r in range(rho.max() + 1)]), rho


@pytest.mark.parametrize("shape", [(5, 2, 8, 8), (3, 1, 8, 12), (2, 3, 16, 16)])
def test_radial_power_matches_numpy(rng, shape):
    delta = rng.normal(size=shape)
    expected, _ = np_radial_power(delta)
    got = radial_power(torch.tensor(delta, dtype=torch.float32))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Parseval: power summed over all frequencies is the mean squared norm per (example, channel)
    _, rho = np_radial_power(delta)
    counts = np.bincount(rho.ravel())
    total = (got * counts).sum()
    assert total == pytest.approx((delta.astype(np.float32).astype(np.float64) ** 2).sum() / np.prod(shape[:2]),
                                  rel=1e-5)


@pytest.mark.parametrize("ky, kx", [(1, 2), (0, 3), (2, 2), (0, 0)])
def test_radial_power_of_one_sinusoid_sits_at_its_radius(ky, kx):
    h = w = 8
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    wave = np.cos(2 * np.pi * (ky * y / h + kx * x / w))
    power = radial_power(torch.tensor(wave[None, None], dtype=torch.float32))
    k = np.sqrt((np.fft.fftfreq(h) * h)[:, None] ** 2 + (np.fft.fftfreq(w) * w)[None, :] ** 2)
    bin_ = int(np.rint(np.hypot(ky, kx)))
    in_bin = int((np.rint(k) == bin_).sum())
    energy = (wave**2).sum()  # all of it at +-k, i.e. in one radius bin
    expected = np.zeros(int(np.rint(k.max())) + 1)
    expected[bin_] = energy / in_bin
    np.testing.assert_allclose(power, expected, atol=1e-6)


def test_gradient_norm_matches_autograd(unet, scheduler):
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(1, 1, 8, 8, generator=gen) * 2 - 1
    eps = torch.randn(1, 1, 8, 8, generator=gen)
    for step in (5, 500, 990):
        t = torch.tensor([step])
        got = gradient_norm(unet, scheduler, a, t, eps)
        ab = alpha_bar(step)
        params = list(unet.parameters())
        loss = (unet(float(np.sqrt(ab)) * a + float(np.sqrt(1 - ab)) * eps, t).sample - eps).pow(2).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        expected = np.sqrt(sum((g.double() ** 2).sum().item() for g in grads if g is not None))
        assert got == pytest.approx(expected, rel=1e-4), step


def test_draws_are_seeded_in_their_buckets_and_cycle_over_the_forget_images(rng):
    forget = torch.tensor(rng.random((3, 1, 8, 8)), dtype=torch.float32)
    buckets, per_bucket = 4, 7
    first = list(draws(forget, T, buckets, per_bucket, seed=3))
    again = list(draws(forget, T, buckets, per_bucket, seed=3))
    other = list(draws(forget, T, buckets, per_bucket, seed=4))
    assert [d[0] for d in first] == list(range(buckets))
    for (b, a, t, eps), (_, a2, t2, eps2) in zip(first, again):
        assert torch.equal(a, a2) and torch.equal(t, t2) and torch.equal(eps, eps2)
        lo, hi = b * T // buckets, (b + 1) * T // buckets  # [bT/B, (b+1)T/B)
        assert t.shape == (per_bucket,) and ((t >= lo) & (t < hi)).all()
        assert eps.shape == (per_bucket, 1, 8, 8)
        for i in range(per_bucket):
            assert torch.equal(a[i], forget[i % 3])
    assert not all(torch.equal(f[2], o[2]) and torch.equal(f[3], o[3]) for f, o in zip(first, other))
    spread = torch.cat([d[2] for d in draws(forget, T, 2, 500, seed=0)])
    assert spread[:500].min() < 50 and spread[:500].max() > 450  # t ~ U over the whole bucket
    assert spread[500:].min() < 550 and spread[500:].max() > 950
    assert spread[:500].float().std() > 100


def perturbed(unet, scale=1e-2, seed=1):
    other = copy.deepcopy(unet)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return other


def reference_diagnosis(pretrained, unlearned, forget, buckets, per_bucket, seed):
    """Per bucket: mean gradient norm of each model, and P(rho) of the change in predicted noise,
    computed with autograd and numpy on the draws."""
    out = []
    for _, a, t, eps in draws(forget, T, buckets, per_bucket, seed):
        ab = alpha_bar(t.numpy())
        g = torch.tensor(np.sqrt(ab), dtype=torch.float32).view(-1, 1, 1, 1)
        s = torch.tensor(np.sqrt(1 - ab), dtype=torch.float32).view(-1, 1, 1, 1)
        a_t = g * a + s * eps
        norms = {}
        for name, net in (("pretrained", pretrained), ("unlearned", unlearned)):
            values = []
            for i in range(len(t)):
                loss = (net(a_t[i:i + 1], t[i:i + 1]).sample - eps[i:i + 1]).pow(2).sum()
                grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
                values.append(np.sqrt(sum((gr.double() ** 2).sum().item() for gr in grads if gr is not None)))
            norms[name] = np.mean(values)
        with torch.no_grad():
            delta = (unlearned(a_t, t).sample - pretrained(a_t, t).sample).double().numpy()
        out.append((norms, np_radial_power(delta)[0]))
    return out


def test_diagnose_matches_reference(unet, scheduler, rng):
    forget = torch.tensor(rng.random((2, 1, 8, 8)) * 2 - 1, dtype=torch.float32)
    other = perturbed(unet)
    result = diagnose(unet, other, scheduler, forget, buckets=3, per_bucket=2, seed=5)
    assert result["T"] == T and len(result["buckets"]) == 3
    assert [b["t_range"] for b in result["buckets"]] == [[0, 332], [333, 665], [666, 999]]
    reference = reference_diagnosis(unet, other, forget, 3, 2, 5)
    for got, (norms, power) in zip(result["buckets"], reference):
        assert got["grad_norm_pretrained"] == pytest.approx(norms["pretrained"], rel=1e-4)
        assert got["grad_norm_unlearned"] == pytest.approx(norms["unlearned"], rel=1e-4)
        assert got["grad_norm_gap"] == pytest.approx(norms["unlearned"] - norms["pretrained"], rel=1e-3, abs=1e-6)
        assert got["grad_norm_gap"] != 0
        np.testing.assert_allclose(got["delta_power_by_radius"], power, rtol=1e-3, atol=1e-12)
        assert max(got["delta_power_by_radius"]) > 0


def test_diagnose_identical_models_has_no_gap_and_no_power(unet, scheduler, rng):
    forget = torch.tensor(rng.random((2, 1, 8, 8)) * 2 - 1, dtype=torch.float32)
    result = diagnose(unet, copy.deepcopy(unet), scheduler, forget, buckets=2, per_bucket=2, seed=0)
    assert [b["t_range"] for b in result["buckets"]] == [[0, 499], [500, 999]]
    for b in result["buckets"]:
        assert b["grad_norm_gap"] == 0 and b["grad_norm_pretrained"] == b["grad_norm_unlearned"] > 0
        assert b["delta_power_by_radius"] == [0.0] * len(b["delta_power_by_radius"])


def test_main_writes_json_and_png(tmp_path, params, unet, scheduler, rng, monkeypatch):
    monkeypatch.setattr(diagnostics_stage, "device", lambda: torch.device("cpu"))  # keep the test's torch threads
    other = perturbed(unet)
    save_model(tmp_path / "pretrained", unet, scheduler)
    save_model(tmp_path / "unlearned", other, scheduler)
    images = rng.integers(0, 256, size=(10, 1, 8, 8), dtype=np.uint8)
    images[6] = images[5]  # forget rows 5..9: two copies of one image, three of another
    images[8] = images[9] = images[7]
    save_npz(tmp_path / "train.npz", images=images, labels=np.zeros(10, dtype=np.int64),
             injected=np.arange(10) >= 5, names=np.array([f"im{i}" for i in range(10)]))
    save_npz(tmp_path / "forget.npz", rows=np.arange(5, 10), group=np.array([0, 0, 1, 1, 1]),
             distinct=np.array([5, 7]), request=np.zeros(2))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, png = tmp_path / "diag/run.json", tmp_path / "diag/run.png"
    diagnostics_stage.main(["--params", str(tmp_path / "params.yaml"), "--pretrained", str(tmp_path / "pretrained"),
                      "--model", str(tmp_path / "unlearned"), "--model-name", "retrack-s0",
                      "--data", str(tmp_path / "train.npz"),
                      "--forget", str(tmp_path / "forget.npz"), "--out", str(out), "--png", str(png)])
    result = json.loads(out.read_text())
    cfg = params["diagnostics"]
    assert result["model"] == str(tmp_path / "unlearned") and result["T"] == T
    assert len(result["buckets"]) == cfg["buckets"] == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the forget images in model space: the distinct rows, 2 x / 255 - 1
    forget = torch.tensor(2 * images[[5, 7]].astype(np.float64) / 255 - 1, dtype=torch.float32)
    reference = reference_diagnosis(unet, other, forget, cfg["buckets"], cfg["draws"], cfg["seed"])
    for got, (norms, power) in zip(result["buckets"], reference):
        assert got["grad_norm_pretrained"] == pytest.approx(norms["pretrained"], rel=1e-4)
        assert got["grad_norm_unlearned"] == pytest.approx(norms["unlearned"], rel=1e-4)
        np.testing.assert_allclose(got["delta_power_by_radius"], power, rtol=1e-3, atol=1e-12)
