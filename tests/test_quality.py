import copy
import importlib.util

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import torch

from pipeline.errors import UserError
from pipeline.evaluation.classifier import DigitClassifier
from pipeline.evaluation.quality import (
    INCEPTION_WEIGHTS,
    ClassifierFeatures,
    ClassifierLogits,
    PCAFeatures,
    check_inception,
    frechet_distance,
    inception_requirements,
    inception_score,
    quality,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIND_SPEC = importlib.util.find_spec
SPREAD = 0.3


def gaussian_fd(fx, fy):
    """Frechet distance between Gaussian fits of two feature sets, from the formula (scipy sqrtm)."""
    mx, my = fx.mean(0), fy.mean(0)
    cx, cy = np.cov(fx, rowvar=False), np.cov(fy, rowvar=False)
    covmean = scipy.linalg.sqrtm(cx @ cy).real
    return float(((mx - my) ** 2).sum() + np.trace(cx + cy - 2 * covmean))


def reference_fd(x, y, dims):
    """Frechet distance between Gaussian fits of PCA features, from the formula (scipy sqrtm)."""
    ref = x.reshape(len(x), -1).astype(np.float64)
    mean = ref.mean(0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    return gaussian_fd((ref - mean) @ vt[:dims].T, (y.reshape(len(y), -1) - mean) @ vt[:dims].T)


def test_pca_frechet_distance_matches_formula(rng):
    reference = rng.random((300, 1, 5, 5), dtype=np.float32)
    samples = (rng.random((200, 1, 5, 5), dtype=np.float32) * 0.8 + 0.1) ** 2
    features = PCAFeatures(reference, dims=6)
    ours = frechet_distance(samples, reference, features)
    assert ours == pytest.approx(reference_fd(reference, samples, 6), rel=1e-3)
    assert frechet_distance(reference, reference, features) == pytest.approx(0.0, abs=1e-6)
    assert ours > 0.1


def classifier(classes=10, spread=0.0):
    """An untrained, seeded digit classifier for 8x8 grey images. With ``spread``, its head is set
    so that its predictions vary from image to image (an untrained head gives all nearly the same)."""
    torch.manual_seed(0)
    model = DigitClassifier(1, classes).eval()
    if spread:
        with torch.no_grad():
            f = model.features(torch.from_numpy(images(np.random.default_rng(1), 256)))
            model.head.weight.copy_(spread * torch.randn(classes, f.shape[1]) / f.std(0).clamp_min(1e-3))
            model.head.bias.copy_(-model.head.weight @ f.mean(0))
    return model


def images(rng, n, scale=1.0):
    return (rng.random((n, 1, 8, 8)) * scale).astype(np.float32)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # dead ReLU units: singular covariances
def test_classifier_fid_matches_formula(rng):
    model = classifier()
    reference, samples = images(rng, 400), images(rng, 300, scale=0.6)
    double = copy.deepcopy(model).double()
    with torch.no_grad():
        fx = double.features(torch.from_numpy(reference.astype(np.float64))).numpy()
        fy = double.features(torch.from_numpy(samples.astype(np.float64))).numpy()
    expected = gaussian_fd(fx, fy)
    assert expected > 1e-3  # the two sets differ in feature space
    assert frechet_distance(samples, reference, ClassifierFeatures(model)) == pytest.approx(expected, rel=1e-4)
    assert ClassifierFeatures(model).num_features == fx.shape[1]


def hand_is(logits):
    """exp(mean_i KL(p(y|x_i) || p(y))) in float64."""
    logits = logits.astype(np.float64)
    log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    p = np.exp(log_p)
    return float(np.exp((p * (log_p - np.log(p.mean(0)))).sum(1).mean()))


def logits_of(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_classifier_inception_score_matches_formula(rng):
    model = classifier(classes=5, spread=SPREAD)
    samples = images(rng, 200)
    logits = logits_of(model, samples)
    expected = hand_is(logits)
    assert expected > 2  # predictions spread over the classes, so a test with teeth
    mean, std = inception_score(samples, ClassifierLogits(model), splits=1)
    assert mean == pytest.approx(expected, rel=1e-4)
    assert np.isnan(std)


@pytest.mark.parametrize("n, splits", [(200, 4), (203, 3)])
def test_inception_score_splits_are_seeded_chunks(rng, n, splits):
    """torchmetrics: a random permutation (torch's global generator, seeded here), torch.chunk into
    ``splits`` pieces, the IS of each, their mean and standard deviation (n - 1)."""
    model = classifier(classes=5, spread=SPREAD)
    samples = images(rng, n)
    logits = logits_of(model, samples)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(7)).numpy()
    scores = [hand_is(logits[chunk.numpy()]) for chunk in torch.from_numpy(order).chunk(splits)]
    mean, std = inception_score(samples, ClassifierLogits(model), splits=splits, seed=7)
    assert mean == pytest.approx(np.mean(scores), rel=1e-4)
    assert std == pytest.approx(np.std(scores, ddof=1), rel=1e-3)
    assert inception_score(samples, ClassifierLogits(model), splits=splits, seed=7) == (mean, std)


def test_inception_score_known_answers():
    classes, per_class = 6, 20
    confident = 30.0 * np.repeat(np.eye(classes, dtype=np.float32), per_class, axis=0)[:, :, None, None]
    flatten = torch.nn.Flatten()
    assert inception_score(confident, flatten, splits=1)[0] == pytest.approx(classes, rel=1e-3)
    same = np.zeros_like(confident)
    same[:, 2] = 30.0
    assert inception_score(same, flatten, splits=1)[0] == pytest.approx(1.0, abs=1e-6)


def test_quality_classifier_pca_and_too_few_samples(rng):
    model = classifier()
    reference, samples = images(rng, 100), images(rng, 50, scale=0.5)
    cfg = {"features": "classifier", "n_reference": 100, "is_splits": 2, "pca_dims": 4, "inception_weights": None}
    result = quality(samples, reference, cfg, model)
    assert result["fid"] == pytest.approx(frechet_distance(samples, reference, ClassifierFeatures(model)))
    assert (result["is_mean"], result["is_std"]) == inception_score(samples, ClassifierLogits(model), 2)
    assert "digit classifier" in result["description"]
    pca = quality(samples, reference, {**cfg, "features": "pca"})
    assert pca["fid"] > 0 and pca["is_mean"] is None and pca["is_std"] is None
    assert "no IS" in pca["description"]
    few = quality(samples[:1], reference, cfg, model)
    assert np.isnan(few["fid"]) and np.isnan(few["is_mean"])
    with pytest.raises(UserError, match="--classifier"):
        quality(samples, reference, cfg)


def torch_fidelity(monkeypatch, present: bool):
    def find_spec(name, *args):
        if name == "torch_fidelity":
            return object() if present else None
        return FIND_SPEC(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_check_inception_names_everything_missing(monkeypatch, tmp_path):
    torch_fidelity(monkeypatch, present=False)
    missing = tmp_path / "nowhere" / INCEPTION_WEIGHTS
    with pytest.raises(UserError) as info:
        check_inception(str(missing))
    message = str(info.value)
    for part in ("torch-fidelity", "pip install '.[inception]'", INCEPTION_WEIGHTS, str(missing),
                 "metrics.quality.inception_weights"):
        assert part in message


def test_check_inception_names_only_what_is_missing(monkeypatch, tmp_path):
    weights = tmp_path / "fid-weights.pth"
    weights.write_bytes(b"fake")
    torch_fidelity(monkeypatch, present=False)
    assert len(inception_requirements(str(weights))) == 1
    with pytest.raises(UserError) as info:
        check_inception(str(weights))
    assert "torch-fidelity" in str(info.value) and INCEPTION_WEIGHTS not in str(info.value)
    torch_fidelity(monkeypatch, present=True)
    with pytest.raises(UserError) as info:
        check_inception(str(tmp_path / "absent.pth"))
    assert INCEPTION_WEIGHTS in str(info.value) and "torch-fidelity package" not in str(info.value)
    assert check_inception(str(weights)) == weights


def test_check_inception_finds_weights_in_torch_hub_cache(monkeypatch, tmp_path):
    torch_fidelity(monkeypatch, present=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError, match=str(tmp_path / "checkpoints")):
        check_inception(None)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / INCEPTION_WEIGHTS).write_bytes(b"fake")
    assert check_inception(None) == tmp_path / "checkpoints" / INCEPTION_WEIGHTS


def test_quality_inception_without_its_pieces_is_a_user_error(monkeypatch, rng, tmp_path):
    torch_fidelity(monkeypatch, present=False)
    cfg = {"features": "inception", "n_reference": 20, "is_splits": 2, "pca_dims": 4,
           "inception_weights": str(tmp_path / "absent.pth")}
    with pytest.raises(UserError, match="torch-fidelity"):
        quality(images(rng, 10), images(rng, 20), cfg)
