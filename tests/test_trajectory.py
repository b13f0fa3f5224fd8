"""The trajectory of a run (pipeline/evaluation/trajectory.py): a point per checkpoint, sampled as
the sample stage samples, and the model's own point taken from the sample stage's samples."""

import json

import numpy as np
import pytest

from pipeline.diffusion.images import to_float
from pipeline.diffusion.models import compute_settings, save_model
from pipeline.diffusion.sampler import sample
from pipeline.evaluation.metrics import evaluate_samples
from pipeline.evaluation.trajectory import trajectory


@pytest.fixture
def setting(params, rng):
    """60 random 8x8 images, the last 10 copies of one forget image; quality by PCA features."""
    images = rng.integers(0, 256, (60, 1, 8, 8), dtype=np.uint8)
    images[50:] = images[50]
    params["metrics"]["quality"].update(features="pca", n_reference=40)
    forget = {"rows": np.arange(50, 60), "group": np.zeros(10, dtype=np.int64), "distinct": np.array([50]),
              "request": np.zeros(1, dtype=np.int64)}
    return params, {"images": images}, forget


def test_a_models_own_point_is_its_first_samples_and_a_checkpoint_is_sampled(tmp_path, setting, unet, scheduler,
                                                                              one_torch_thread):
    params, train, forget = setting
    run = tmp_path / "naive-s0"
    save_model(run, unet, scheduler, {"unlearn.json": json.dumps({"hyperparameters": {"steps": 5}})})
    save_model(run / "checkpoints/step-000002", unet, scheduler)
    n = params["metrics"]["trajectory"]["samples"]
    copies = np.repeat(to_float(train["images"][50:51]), params["sampling"]["n"], axis=0)  # the model "reproduces" A
    rows = trajectory(params, run, train, forget, None, copies)
    assert [r["step"] for r in rows] == [2, 5]
    assert rows[1]["forget_reproduction_pct"] == 100.0 and rows[1]["n_samples"] == n  # the given samples, not new ones
    cfg = params["sampling"]
    drawn = sample(unet, scheduler, n, cfg["steps"], cfg["batch_size"], cfg["seed"], **compute_settings(params))
    expected = evaluate_samples(params, drawn, train, forget, None)
    assert rows[0]["forget_reproduction_pct"] == round(100 * expected["forget_reproduction"]["rate"], 3)
    assert rows[0]["fid"] == round(expected["quality"]["fid"], 4)
    assert trajectory(params, run / "checkpoints/step-000002", train, forget, None, copies)[0]["step"] == 0
