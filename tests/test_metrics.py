import numpy as np
import pytest
import scipy.linalg

from pipeline.metrics import PCAFeatures, evaluate, frechet_distance, reproduction, thresholds


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


def reference_fd(x, y, dims):
    """Frechet distance between Gaussian fits of PCA features, from the formula (scipy sqrtm)."""
    ref = x.reshape(len(x), -1).astype(np.float64)
    mean = ref.mean(0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    fx = (ref - mean) @ vt[:dims].T
    fy = (y.reshape(len(y), -1) - mean) @ vt[:dims].T
    mx, my = fx.mean(0), fy.mean(0)
    cx, cy = np.cov(fx, rowvar=False), np.cov(fy, rowvar=False)
    covmean = scipy.linalg.sqrtm(cx @ cy).real
    return float(((mx - my) ** 2).sum() + np.trace(cx + cy - 2 * covmean))


def test_pca_frechet_distance_matches_formula(rng):
    reference = rng.random((300, 1, 5, 5), dtype=np.float32)
    samples = (rng.random((200, 1, 5, 5), dtype=np.float32) * 0.8 + 0.1) ** 2
    features = PCAFeatures(reference, dims=6)
    ours = frechet_distance(samples, reference, features)
    assert ours == pytest.approx(reference_fd(reference, samples, 6), rel=1e-3)
    assert frechet_distance(reference, reference, features) == pytest.approx(0.0, abs=1e-6)
    assert ours > 0.1


def test_evaluate_leaves_reproductions_out_of_quality(params, rng):
    images = rng.integers(0, 256, size=(60, 1, 4, 4), dtype=np.uint8)
    images[50:] = images[50]  # ten copies of one forget image
    train = {"images": images, "labels": np.zeros(60, dtype=np.int64), "injected": np.r_[np.full(50, -1), np.zeros(10)],
             "names": np.array([f"{i}" for i in range(60)])}
    forget = {"rows": np.arange(50, 60), "group": np.zeros(10, dtype=np.int64), "distinct": np.array([50])}
    forget_image = images[50].astype(np.float32) / 255
    nearest = min(np.linalg.norm(images[i] / 255 - forget_image) for i in range(50))
    params["metrics"]["quality"] = {"pca_dims": 4, "n_reference": 50}
    copies = np.repeat(forget_image[None], 3, axis=0)
    others = images[:20].astype(np.float32) / 255
    result = evaluate(params, np.concatenate([copies, others]), train, forget)
    rep = result["forget_reproduction"]
    assert rep["count"] == 3 and rep["rate"] == pytest.approx(3 / 23)
    assert rep["per_image"][0]["nearest_retain_distance"] == pytest.approx(nearest, rel=1e-5)
    assert rep["per_image"][0]["threshold"] == pytest.approx(0.87 * nearest, rel=1e-5)
    assert result["quality"]["n_samples_used"] == 20
    assert np.isfinite(result["quality"]["value"])
