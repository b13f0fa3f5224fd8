"""pipeline.evaluation.metrics and memorization: forget reproduction, nearest-neighbour memorization,
and the per-model figures."""

import json

import numpy as np
import pytest
import torch

from pipeline.evaluation.copydetect import Embedding
from pipeline.evaluation.memorization import nn_memorization, reproduction, thresholds
from pipeline.evaluation.metrics import copy_detection, cost, evaluate_samples
from pipeline.stages.metrics import main


def planted(rng, centre, distance, n):
    """n images at exactly `distance` (L2) from `centre`."""
    direction = rng.normal(size=(n, *centre.shape))
    direction /= np.linalg.norm(direction.reshape(n, -1), axis=1).reshape(n, 1, 1, 1)
    return (centre[None] + distance * direction).astype(np.float32)


def test_reproduction_counts_samples_within_each_images_threshold(rng):
    forget = rng.random((2, 1, 6, 6), dtype=np.float32)
    tau = np.array([1.0, 2.0])
    samples = np.concatenate([
        planted(rng, forget[0], 0.5, 3),  # within tau_0
        planted(rng, forget[0], 1.5, 2),  # outside tau_0 (and far from image 1)
        planted(rng, forget[1], 1.9, 4),  # within tau_1
        rng.random((5, 1, 6, 6), dtype=np.float32) + 5,  # far from both
    ])
    brute = np.array([[np.linalg.norm(s - f) for f in forget] for s in samples])
    expected_hits = (brute < tau).any(axis=1)
    assert expected_hits.sum() == 7  # the planted construction is what the test thinks it is
    rep = reproduction(samples, forget, tau)
    assert np.array_equal(rep["hits"], expected_hits)
    assert rep["count"] == 7 and rep["rate"] == pytest.approx(7 / 14)
    assert rep["per_image_count"] == list((brute < tau).sum(axis=0))
    np.testing.assert_allclose(rep["per_image_closest"], brute.min(axis=0), rtol=1e-5)


def test_thresholds_relative_and_absolute():
    tau, rule = thresholds({"rule": "relative", "value": 0.87}, np.array([11.49, 2.0]))
    np.testing.assert_allclose(tau, [0.87 * 11.49, 1.74])
    assert "relative" in rule and "11.49" in rule
    tau, rule = thresholds({"rule": "absolute", "value": 10}, np.array([11.49, 2.0]))
    np.testing.assert_allclose(tau, [10, 10])
    assert "absolute" in rule


def test_evaluate_leaves_reproductions_out_of_quality(params, rng):
    images = rng.integers(0, 256, size=(60, 1, 4, 4), dtype=np.uint8)
    images[50:] = images[50]  # ten copies of one forget image
    train = {"images": images, "labels": np.zeros(60, dtype=np.int64), "injected": np.r_[np.full(50, -1), np.zeros(10)],
             "names": np.array([f"{i}" for i in range(60)])}
    forget = {"rows": np.arange(50, 60), "group": np.zeros(10, dtype=np.int64), "distinct": np.array([50])}
    forget_image = images[50].astype(np.float32) / 255
    nearest = min(np.linalg.norm(images[i] / 255 - forget_image) for i in range(50))
    params["metrics"]["quality"].update(features="pca", pca_dims=4, n_reference=50)
    copies = np.repeat(forget_image[None], 3, axis=0)
    others = images[:20].astype(np.float32) / 255
    result = evaluate_samples(params, np.concatenate([copies, others]), train, forget, classifier=None)
    rep = result["forget_reproduction"]
    assert rep["count"] == 3 and rep["rate"] == pytest.approx(3 / 23)
    assert rep["per_image"][0]["nearest_retain_distance"] == pytest.approx(nearest, rel=1e-5)
    assert rep["per_image"][0]["threshold"] == pytest.approx(0.87 * nearest, rel=1e-5)
    assert result["quality"]["n_samples_used"] == 20
    assert np.isfinite(result["quality"]["fid"]) and result["quality"]["features"] == "pca"
    assert result["nn_memorization"]["count"] == 3  # the exact copies


def test_nn_memorization_is_the_ratio_test_over_distinct_training_images(rng):
    images = rng.integers(0, 256, size=(12, 1, 3, 3), dtype=np.uint8)
    images[8:] = images[8]  # four copies of the forget image: one distinct image
    forget = {"rows": np.arange(8, 12), "group": np.zeros(4, dtype=np.int64), "distinct": np.array([8])}
    x = images.astype(np.float64) / 255
    target = x[8]
    other = x[0]
    samples = np.stack([target + 0.001, 0.5 * target + 0.5 * other, other + 0.001, target]).astype(np.float32)
    out = nn_memorization(samples, images, forget, ratio=0.33)
    distinct = x[:9].reshape(9, -1)  # rows 0-7 and one copy of the forget image
    want = []
    for s in samples.reshape(4, -1):
        d = np.sort(np.linalg.norm(distinct - s, axis=1))
        nearest = np.argmin(np.linalg.norm(distinct - s, axis=1))
        want.append(nearest == 8 and d[0] < 0.33 * d[1])
    assert want == [True, False, False, True]
    assert out["count"] == 2 and out["rate"] == pytest.approx(0.5)


def test_copy_detection_scores_each_forget_image_with_the_embedding(rng):
    embedding = Embedding("pixels", True, lambda images: images.flatten(1) - 0.5)
    originals = torch.rand(2, 1, 4, 4)
    recon = torch.stack([originals[0].expand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)])
    neighbours = torch.rand(2, 5, 1, 4, 4)
    out = copy_detection(embedding, originals, recon, neighbours, torch.rand(10, 1, 4, 4))
    assert out[0]["similarity"] == pytest.approx(1.0) and out[0]["nsscd"] == pytest.approx(1.0)
    assert out[1]["similarity"] < 0.9 and set(out[1]) >= {"nsscd", "plausibility", "chance", "neighbour_similarity"}


def test_cost_reads_the_models_record_or_gives_nulls(tmp_path):
    assert cost(tmp_path) == {"wall_time_s": None, "steps": None, "peak_rss_mib": None, "peak_cuda_mib": None}
    record = {"wall_time_s": 3.5, "steps": 5, "peak_rss_mib": 800.0, "peak_cuda_mib": None}
    (tmp_path / "cost.json").write_text(json.dumps(record))
    assert cost(tmp_path) == record


def test_metrics_without_the_classifier_it_needs_stops_before_compute(tmp_path, capsys):
    from tests.conftest import TINY

    args = ["--params", str(TINY)] + [x for name in ("samples", "model", "data", "heldout", "forget", "knn", "out",
                                                     "npz") for x in (f"--{name}", str(tmp_path / name))]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--model-name", "pretrained"])
    assert exc.value.code == 2
    assert "--classifier: required" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
