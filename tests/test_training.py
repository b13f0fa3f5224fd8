import csv
import io
import os
import shutil

import numpy as np
import pytest
import torch

from pipeline.diffusion.models import build_unet, load_model, save_model
from pipeline.methods.losses import DDPMLoss, ReTrack
from pipeline.training.loop import BatchSource, optimizer_settings, step_direction, subnormals_flushed, train
from pipeline.training.resume import STATE


def tiny_source(rng, n=40, forget=6):
    images = rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8)
    forget_rows = np.arange(n - forget, n)
    group = np.arange(forget) % 2  # two distinct forget images
    neighbours = np.array([[0, 1, 2, 3], [10, 11, 12, 13]])
    return images, BatchSource(images, np.arange(n - forget), forget_rows, group, neighbours)


def test_batches_from_a_memory_mapped_training_set_are_those_from_memory(tmp_path, rng):
    """The batch source reads and converts only the rows a batch draws: from a memory map of
    train.npz it gives the very batches of the array in memory, x = 2 * pixels / 255 - 1."""
    from pipeline.artifacts import save_npz
    from pipeline.data.sets import load_training_set

    images, source = tiny_source(rng)
    save_npz(tmp_path / "train.npz", images=images, labels=np.zeros(40), injected=np.zeros(40), names=np.zeros(40))
    mapped = load_training_set(tmp_path / "train.npz")["images"]
    assert isinstance(mapped, np.memmap)
    other = BatchSource(mapped, np.arange(34), np.arange(34, 40), np.arange(6) % 2, source.neighbours.numpy())
    assert other.digest() == source.digest()
    drawn = []
    for each in (source, other):
        torch.manual_seed(1)
        drawn.append(each.draw(("forget", "retain"), 5, "cpu"))
    for name in ("forget", "retain", "neighbours"):
        torch.testing.assert_close(getattr(drawn[0], name), getattr(drawn[1], name), rtol=0, atol=0)
    torch.manual_seed(1)
    pick = torch.randint(0, 6, (5,))
    torch.testing.assert_close(drawn[0].forget, torch.from_numpy(images[34 + pick.numpy()] / 255 * 2 - 1).float())


def weights(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_same_seed_same_weights(params, scheduler, rng):
    _, source = tiny_source(rng)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = build_unet(params)
        net, _ = train(net, ReTrack(scheduler, lam=0.5), source, steps=3, batch_size=4, lr=1e-3, seed=7)
        runs.append(weights(net))
    assert torch.equal(runs[0], runs[1])
    torch.manual_seed(0)
    other, _ = train(build_unet(params), ReTrack(scheduler, lam=0.5), source, steps=3, batch_size=4, lr=1e-3, seed=8)
    assert not torch.equal(runs[0], weights(other))


def test_batches_pair_forget_images_with_their_neighbours(rng):
    images, source = tiny_source(rng)
    batch = source.draw(("retain", "forget"), 32, "cpu")
    as_model = torch.from_numpy(images).float() / 255 * 2 - 1
    for a, nb in zip(batch.forget, batch.neighbours):
        row = next(i for i in range(34, 40) if torch.equal(as_model[i], a))
        expected = [0, 1, 2, 3] if (row - 34) % 2 == 0 else [10, 11, 12, 13]
        assert torch.equal(nb, as_model[expected])
    retain_set = as_model[:34]
    assert all(any(torch.equal(x, r) for r in retain_set) for x in batch.retain)


def test_log_and_ema(params, scheduler, rng):
    _, source = tiny_source(rng)
    torch.manual_seed(0)
    raw, history = train(build_unet(params), DDPMLoss(scheduler), source, steps=4, batch_size=4, lr=1e-2, seed=0)
    torch.manual_seed(0)
    ema, _ = train(build_unet(params), DDPMLoss(scheduler), source, steps=4, batch_size=4, lr=1e-2, seed=0,
                   ema_decay=0.9)
    rows = list(csv.DictReader(io.StringIO(history)))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) and float(r["grad_norm"]) > 0 for r in rows)
    assert not torch.equal(weights(raw), weights(ema))  # the EMA weights are returned, not the raw ones


def test_warmup_ramps_learning_rate(params, scheduler, rng):
    _, source = tiny_source(rng)
    _, history = train(build_unet(params), DDPMLoss(scheduler), source, steps=4, batch_size=2, lr=1e-3, seed=0,
                       warmup_steps=3)
    lrs = [float(r["lr"]) for r in csv.DictReader(io.StringIO(history))]
    assert np.allclose(lrs, [0.5e-3, 0.75e-3, 1e-3, 1e-3])


class PredictionDtypes(ReTrack):
    """ReTrack, recording the dtype of the predictions the objective gets from the net."""

    def __init__(self, scheduler):
        super().__init__(scheduler, lam=0.5)
        self.dtypes = []

    def __call__(self, net, batch):
        self.dtypes.append(net(batch.retain, torch.zeros(len(batch.retain), dtype=torch.long)).sample.dtype)
        return super().__call__(net, batch)


def test_bf16_autocasts_the_unet_and_keeps_the_losses_in_float32(params, scheduler, rng, one_torch_thread):
    _, source = tiny_source(rng)
    torch.manual_seed(0)
    net = build_unet(params)
    inside = []  # per forward pass: autocast on?, the UNet's own output dtype
    net.register_forward_hook(lambda m, args, out: inside.append((torch.is_autocast_enabled("cpu"), out.sample.dtype)))
    batches = [source.draw(ReTrack.needs, 8, "cpu")]
    result = {}
    for precision in ("fp32", "bf16"):
        inside.clear()
        objective = PredictionDtypes(scheduler)
        torch.manual_seed(1)
        result[precision] = step_direction(net, objective, batches, precision)
        assert set(objective.dtypes) == {torch.float32}
        assert set(inside) == ({(False, torch.float32)} if precision == "fp32" else {(True, torch.bfloat16)})
    (full, full_record), (half, half_record) = result["fp32"], result["bf16"]
    assert torch.isfinite(half).all() and not torch.equal(half, full)
    assert torch.cosine_similarity(half, full, 0) > 0.999 and (half - full).norm() < 0.05 * full.norm()
    assert half_record["loss"] == pytest.approx(full_record["loss"], rel=1e-2)


def test_bf16_training_is_close_to_fp32(params, scheduler, rng, one_torch_thread):
    _, source = tiny_source(rng)
    runs = {}
    for precision in (None, "fp32", "bf16"):
        torch.manual_seed(0)
        kwargs = {} if precision is None else {"precision": precision}
        net, _ = train(build_unet(params), DDPMLoss(scheduler), source, steps=4, batch_size=8, lr=1e-3, seed=0,
                       **kwargs)
        runs[precision] = weights(net)
    assert torch.equal(runs["fp32"], runs[None])  # fp32 is the plain forward pass
    assert torch.isfinite(runs["bf16"]).all() and not torch.equal(runs["bf16"], runs["fp32"])
    torch.testing.assert_close(runs["bf16"], runs["fp32"], atol=0.02, rtol=0)


def interrupted(source, draws):
    """``source``, raising KeyboardInterrupt (as a Ctrl-C would) at draw number ``draws`` + 1."""
    draw, calls = source.draw, iter(range(draws))

    def stopping(*args):
        if next(calls, None) is None:
            raise KeyboardInterrupt
        return draw(*args)

    source.draw = stopping
    return source


def run_retrack(params, scheduler, checkpoints, stop_after=None, **kwargs):
    """ReTrack, 4 steps from a seeded UNet on the tiny source, a model saved at step 2 under
    ``checkpoints``; with ``stop_after``, interrupted after that many batches."""
    _, source = tiny_source(np.random.default_rng(0))
    torch.manual_seed(0)
    net, _ = train(build_unet(params), ReTrack(scheduler, lam=0.5),
                   source if stop_after is None else interrupted(source, stop_after), steps=4, batch_size=4,
                   lr=1e-3, seed=0, checkpoint_every=2,
                   on_checkpoint=lambda step, net: save_model(checkpoints / str(step), net, scheduler), **kwargs)
    return net


def test_channels_last_training_is_close_and_saves_and_resumes_as_usual(tmp_path, params, scheduler,
                                                                          one_torch_thread):
    plain = run_retrack(params, scheduler, tmp_path / "plain")
    nhwc = run_retrack(params, scheduler, tmp_path / "nhwc", channels_last=True)
    assert not torch.equal(weights(nhwc), weights(plain))
    torch.testing.assert_close(weights(nhwc), weights(plain), atol=1e-4, rtol=0)  # Adam steps of lr = 1e-3
    assert all(p.is_contiguous() for p in nhwc.parameters())  # the result in the default layout
    saved, _ = load_model(tmp_path / "nhwc" / "2")  # a checkpoint taken mid-run, in NHWC, loads as any other
    assert saved.state_dict().keys() == load_model(tmp_path / "plain" / "2")[0].state_dict().keys()
    resume = tmp_path / "resume"
    with pytest.raises(KeyboardInterrupt):
        run_retrack(params, scheduler, tmp_path / "cut", stop_after=3, channels_last=True, resume=resume,
                    resume_every=2)
    state = torch.load(resume / STATE, weights_only=True)
    assert state["step"] == 2 and state["net"].keys() == plain.state_dict().keys()
    resumed = run_retrack(params, scheduler, tmp_path / "cut", channels_last=True, resume=resume, resume_every=2)
    assert torch.equal(weights(resumed), weights(nhwc))


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_training_is_close_to_eager_and_returns_the_plain_module(tmp_path, params, scheduler,
                                                                            one_torch_thread):
    eager = run_retrack(params, scheduler, tmp_path / "eager")
    compiled = run_retrack(params, scheduler, tmp_path / "compiled", compile=True)
    assert type(compiled) is type(eager) and compiled.state_dict().keys() == eager.state_dict().keys()
    torch.testing.assert_close(weights(compiled), weights(eager), atol=1e-4, rtol=0)
    assert load_model(tmp_path / "compiled" / "2")[0].state_dict().keys() == eager.state_dict().keys()


def test_the_optimizer_is_adamw_with_the_params_settings(params, scheduler, monkeypatch):
    """train() builds AdamW with the section's betas, weight decay and eps: the reference codes'
    DDPM settings for unlearning (docs/methods.md), torch's defaults for pretraining."""
    made = []
    real = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **kw: made.append(kw) or real(*a, **kw))
    images = np.random.default_rng(0).integers(0, 256, (12, 1, 8, 8), dtype=np.uint8)
    source = BatchSource(images, retain_rows=np.arange(12))
    for section in (params["methods"]["naive"], params["pretrain"]):
        train(build_unet(params), DDPMLoss(scheduler), source, steps=1, batch_size=2, lr=1e-3, seed=0,
              **optimizer_settings(section))
    assert made[0] == {"lr": 1e-3, "betas": (0.95, 0.999), "weight_decay": 1e-6, "eps": 1e-8}
    assert made[1] == {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.01, "eps": 1e-8}


def test_weight_decay_is_adamws_decoupled_decay(params, scheduler):
    """One step from the same weights and batch with and without weight decay differ by exactly
    lr * weight_decay * p0 (AdamW: p <- p (1 - lr wd) - lr m / (sqrt(v) + eps))."""
    images = np.random.default_rng(0).integers(0, 256, (12, 1, 8, 8), dtype=np.uint8)
    source = BatchSource(images, retain_rows=np.arange(12))
    lr, wd = 1e-2, 0.5
    flat = []
    for decay in (0.0, wd):
        torch.manual_seed(0)
        net = build_unet(params)
        p0 = torch.cat([p.detach().flatten() for p in net.parameters()]).clone()
        net, _ = train(net, DDPMLoss(scheduler), source, steps=1, batch_size=2, lr=lr, seed=0, weight_decay=decay)
        flat.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    torch.testing.assert_close(flat[0] - flat[1], lr * wd * p0, rtol=1e-4, atol=1e-7)


def test_subnormals_are_flushed_only_inside_the_block():
    """The training loop computes with subnormal floats read as zero (SISS's tiny weights make the
    backward passes 3x slower otherwise), and leaves torch's default behind it."""
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    with subnormals_flushed():
        assert (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() > 0.0
