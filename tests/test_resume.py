"""Resuming the training loop (pipeline.training.resume) and the stages that run it: a run stopped after a
saved state and run again ends with the same weights, log and checkpoints as an uninterrupted one."""


import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline.artifacts import save_npz
from pipeline.diffusion.models import build_unet, save_model
from pipeline.methods.losses import DDPMLoss, ReTrack
from pipeline.stages import pretrain as pretrain_stage
from pipeline.stages import unlearn as unlearn_stage
from pipeline.training import pretraining
from pipeline.training.loop import BatchSource, train
from pipeline.training.resume import STATE, resume_dir

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 8, 3  # states after steps 3 and 6
LOOPS = {  # the pretraining loop (EMA, warm-up) and an unlearning one (two terms, accumulation, checkpoints)
    "pretrain": dict(ema_decay=0.9, warmup_steps=3),
    "unlearn": dict(accumulate=2, checkpoint_every=2),
}


def objective(name, scheduler):
    return DDPMLoss(scheduler) if name == "pretrain" else ReTrack(scheduler, lam=0.5)


def source(images):
    n = len(images)
    return BatchSource(images, np.arange(n - 6), np.arange(n - 6, n), np.arange(6) % 2,
                       np.array([[0, 1, 2, 3], [10, 11, 12, 13]]))


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, size=(40, 1, 8, 8), dtype=np.uint8)


def run(params, scheduler, images, loop, stop_after=None, **kwargs):
    """Train a fresh seeded UNet; with ``stop_after``, interrupted while drawing the batches of the
    next step (KeyboardInterrupt, as a Ctrl-C would). Returns weights, log and the checkpoints taken."""
    settings = {**LOOPS[loop], "steps": STEPS, "batch_size": 4, "lr": 1e-3, "seed": 0, **kwargs}
    torch.manual_seed(0)
    net, batches, checkpoints = build_unet(params), source(images), {}
    if stop_after is not None:
        draw, calls = batches.draw, iter(range(stop_after * settings.get("accumulate", 1)))

        def stopping(*args):
            if next(calls, None) is None:
                raise KeyboardInterrupt
            return draw(*args)

        batches.draw = stopping
    net, history = train(net, objective(loop, scheduler), batches, **settings,
                         on_checkpoint=lambda step, net: checkpoints.update({step: weights(net)}))
    return weights(net), history, checkpoints


def weights(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize("loop", LOOPS)
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, params, scheduler, images, loop, caplog,
                                                     one_torch_thread):
    reference, reference_log, reference_checkpoints = run(params, scheduler, images, loop)
    resume = tmp_path / "resume"
    with pytest.raises(KeyboardInterrupt):
        run(params, scheduler, images, loop, stop_after=4, resume=resume, resume_every=EVERY)
    assert torch.load(resume / STATE, weights_only=True)["step"] == 3
    with caplog.at_level(logging.INFO, logger="pipeline.training.resume"):
        resumed, resumed_log, checkpoints = run(params, scheduler, images, loop, resume=resume, resume_every=EVERY)
    assert "resumed from step 3" in caplog.text
    assert torch.equal(resumed, reference)  # bit for bit on CPU, EMA weights included
    assert resumed_log == reference_log
    assert list(checkpoints) == [s for s in reference_checkpoints if s > 3]  # those up to 3 were taken before
    assert all(torch.equal(checkpoints[s], reference_checkpoints[s]) for s in checkpoints)


@pytest.mark.parametrize("change", ["resume_key", "lr", "data", "unreadable"])
def test_state_of_another_run_is_discarded(tmp_path, params, scheduler, images, change, caplog, one_torch_thread):
    reference, reference_log, _ = run(params, scheduler, images, "unlearn")
    resume = tmp_path / "resume"
    stale = {"resume_key": {"resume_key": {"method": "other"}}, "lr": {"lr": 2e-3}}.get(change, {})
    with pytest.raises(KeyboardInterrupt):
        run(params, scheduler, 255 - images if change == "data" else images, "unlearn", stop_after=4,
            resume=resume, resume_every=EVERY, **stale)
    if change == "unreadable":
        (resume / STATE).write_bytes(b"not a state")
    (resume / "checkpoints").mkdir()  # a stale run's staged files go with its state
    with caplog.at_level(logging.WARNING, logger="pipeline.training.resume"):
        again, again_log, _ = run(params, scheduler, images, "unlearn", resume=resume, resume_every=EVERY)
    assert "starting afresh" in caplog.text
    assert not (resume / "checkpoints").exists()
    assert torch.equal(again, reference) and again_log == reference_log


def test_resume_every_zero_saves_nothing(tmp_path, params, scheduler, images, one_torch_thread):
    reference, _, _ = run(params, scheduler, images, "pretrain")
    again, _, _ = run(params, scheduler, images, "pretrain", resume=tmp_path / "resume", resume_every=0)
    assert torch.equal(again, reference) and not (tmp_path / "resume" / STATE).exists()  # only the attempts


def test_resume_dir_is_outside_the_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resume_dir("models/retrack-s0") == tmp_path / "resume/models/retrack-s0"
    assert resume_dir(tmp_path / "models/pretrained") == tmp_path / "resume/models/pretrained"
    assert resume_dir("/elsewhere/models/retrained") == tmp_path / "resume/elsewhere/models/retrained"
    assert resume_dir("sub/../models/x") == tmp_path / "resume/models/x"


# A real kill: the stage's own command line, SIGKILLed once it has saved a state, then rerun.

STAGE_STEPS = 40


@pytest.fixture
def workdir(tmp_path, params, unet, scheduler, images, monkeypatch):
    """A workflow directory with the inputs of the pretrain and unlearn stages, as the current one."""
    params["compute"]["resume_every"] = 3
    params["pretrain"].update(steps=STAGE_STEPS, batch_size=8)
    params["methods"]["retrack"].update(steps=STAGE_STEPS, batch_size=4, accumulate=2, checkpoint_every=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    n = len(images)
    save_npz(tmp_path / "data/train.npz", images=images, labels=np.zeros(n, dtype=np.int64),
             injected=np.arange(n) >= n - 6, names=np.array([f"im{i}" for i in range(n)]))
    save_npz(tmp_path / "data/forget.npz", rows=np.arange(n - 6, n), group=np.arange(6) % 2,
             distinct=np.array([34, 35]), request=np.zeros(2))
    save_npz(tmp_path / "data/knn.npz", neighbours=np.array([[0, 1, 2, 3], [10, 11, 12, 13]]),
             distances=np.ones((2, 4), dtype=np.float32))
    save_model(tmp_path / "models/pretrained", unet, scheduler)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def stage_args(stage, out):
    common = ["--params", "params.yaml", "--data", "data/train.npz", "--out", out]
    if stage == "pretrain":
        return common
    return [*common, "--run", "retrack-s0", "--forget", "data/forget.npz", "--knn", "data/knn.npz",
            "--model", "models/pretrained"]


def one_core():
    """The child's CPU affinity: one core, so that its device() takes one torch thread, as the test's."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def start(stage, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", f"pipeline.stages.{stage}", *stage_args(stage, out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=one_core)


def kill_when_saved(process, state: Path, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not state.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no state saved"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate()


def model_weights(directory: Path) -> dict:
    return load_file(directory / "unet/diffusion_pytorch_model.safetensors")


def assert_same_model(got: Path, expected: Path):
    a, b = model_weights(got), model_weights(expected)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stage", ["pretrain", "unlearn"])
def test_killed_stage_resumes_to_the_same_model(workdir, stage, monkeypatch, one_torch_thread):
    module = pretrain_stage if stage == "pretrain" else unlearn_stage
    # keep the test's one torch thread: device() where each stage's model is put on it
    monkeypatch.setattr(pretraining if stage == "pretrain" else unlearn_stage, "device", lambda: torch.device("cpu"))
    module.main(stage_args(stage, "models/reference"))
    assert not (workdir / "resume/models/reference").exists()  # removed once the model is written

    out = workdir / "models/killed"
    kill_when_saved(start(stage, "models/killed"), workdir / "resume/models/killed" / STATE)
    assert not out.exists(), "the job ended before it could be killed"
    if stage == "unlearn":  # the checkpoint taken before the state survives the kill, outside the output
        assert (workdir / "resume/models/killed/checkpoints/step-000002/unet").is_dir()
    rerun = start(stage, "models/killed")
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert "resumed from step" in stderr

    assert_same_model(out, workdir / "models/reference")
    assert (out / "train_log.csv").read_text() == (workdir / "models/reference/train_log.csv").read_text()
    assert not (workdir / "resume/models/killed").exists()
    # the cost of both attempts: the killed one up to its saved state, then the rerun to the end
    cost = json.loads((out / "cost.json").read_text())
    killed, rerun_ = cost["attempts"]
    assert killed["first_step"] == 0 and killed["last_step"] == rerun_["first_step"] > 0
    assert rerun_["last_step"] == cost["steps"] == STAGE_STEPS
    assert cost["wall_time_s"] == pytest.approx(killed["wall_time_s"] + rerun_["wall_time_s"], abs=0.011)
    assert cost["peak_rss_mib"] == max(killed["peak_rss_mib"], rerun_["peak_rss_mib"])
    assert len(json.loads((workdir / "models/reference/cost.json").read_text())["attempts"]) == 1
    if stage == "unlearn":
        steps = [f"step-{s:06d}" for s in range(2, STAGE_STEPS, 2)]
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == steps
        for name in steps:
            assert_same_model(out / "checkpoints" / name, workdir / "models/reference/checkpoints" / name)
