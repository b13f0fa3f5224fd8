"""Sample quality: FID and IS of a model's samples against retain images, by torchmetrics.

FID (Heusel et al. 2017) is the Frechet distance between Gaussian fits of the features of the
samples and of reference images; IS (Salimans et al. 2016) is exp(E_x KL(p(y|x) || p(y))) of a
classifier's predictions on the samples. ``metrics.quality.features`` picks the network:

- ``classifier``: the digit classifier trained on the retain set (:mod:`pipeline.evaluation.classifier`),
  FID on its penultimate features and IS on its logits, as the MNIST T-shirt protocol of
  SISS/ReTrack scores MNIST samples.
- ``inception``: torchmetrics' Inception v3 (the FID weights of torch-fidelity), FID on its
  2048-d pool features and IS on its logits, the standard for RGB photographs. It needs the
  optional torch-fidelity package and the weights file on disk (:func:`check_inception`); the
  pipeline never lets torch-fidelity download them.
- ``pca``: the top ``pca_dims`` principal components of the reference images, FID only (PCA
  features have no classes, so no IS).

How images reach the network (torchmetrics 1.9): with ``normalize=True`` FID hands a custom
feature module float [0, 1] images unchanged, but IS casts them to uint8 whatever the module, so
IS is built with ``normalize=False`` and given the images as they are: float [0, 1] for the
classifier, uint8 (rounded here, not truncated) for Inception, which only takes uint8.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
from torchmetrics.image.inception import InceptionScore

from pipeline.diffusion.images import flat_float, to_uint8
from pipeline.errors import UserError

BATCH = 100  # images per forward pass


INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's name for the FID Inception weights


TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's name for the same weights


INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + TORCH_FIDELITY_WEIGHTS


class PCAFeatures(nn.Module):
    """Projection of flattened [0, 1] images on the top ``dims`` principal components of a
    reference set (a feature extractor for torchmetrics' Frechet distance)."""

    def __init__(self, reference: np.ndarray, dims: int):
        super().__init__()
        x = flat_float(reference).astype(np.float64)
        if dims > min(x.shape):
            raise UserError(f"metrics.quality.pca_dims: {dims} is more than the {min(x.shape)} components "
                            "that the reference images have")
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        self.register_buffer("mean", torch.from_numpy(mean).float())
        self.register_buffer("components", torch.from_numpy(vt[:dims]).float())
        self.num_features = dims

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1) - self.mean) @ self.components.T


class ClassifierFeatures(nn.Module):
    """The classifier's penultimate features of float [0, 1] images: FID's feature extractor."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.head.in_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


class ClassifierLogits(nn.Module):
    """The classifier's logits of float [0, 1] images: IS's class predictions."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images)


def _batches(images: np.ndarray, device: torch.device) -> Iterator[torch.Tensor]:
    for i in range(0, len(images), BATCH):
        yield torch.from_numpy(images[i : i + BATCH]).to(device)


def _fid(metric: FrechetInceptionDistance, samples: np.ndarray, reference: np.ndarray) -> float:
    for real, images in ((True, reference), (False, samples)):
        for batch in _batches(images, metric.device):
            metric.update(batch, real=real)
    return float(metric.compute())


def frechet_distance(samples: np.ndarray, reference: np.ndarray, features: nn.Module) -> float:
    """||mu_s - mu_r||^2 + Tr(S_s + S_r - 2 (S_s S_r)^(1/2)) of the two feature distributions.

    ``features`` maps float [0, 1] images, as ``samples`` and ``reference`` hold them, to (B, d)."""
    return _fid(FrechetInceptionDistance(feature=features, normalize=True), samples, reference)


def inception_score(samples: np.ndarray, logits: nn.Module, splits: int, seed: int = 0) -> tuple[float, float]:
    """The mean and standard deviation (n - 1) over ``splits`` chunks of the samples of
    exp(mean_x KL(p(y|x) || p(y))), p(y|x) = softmax(logits(x)) and p(y) its mean over the chunk.

    ``samples`` go to ``logits`` as they are, on its device. torchmetrics chunks the samples in a
    random order drawn from torch's global generator; it is forked and seeded with ``seed`` here, so
    the figure is reproducible and the caller's random state untouched. One split: the standard
    deviation is NaN.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Metric `InceptionScore` will save all extracted features")
        metric = InceptionScore(feature=logits, splits=splits, normalize=False)
    metric.to(next(logits.parameters(), torch.zeros(())).device)  # where the network is
    for batch in _batches(samples, metric.device):
        metric.update(batch)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom")
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_weights(weights_path: str | None) -> Path | None:
    """The FID Inception weights file: ``weights_path`` if given, else either name of it in torch
    hub's checkpoint cache (where pytorch-fid and torch-fidelity download it); None when absent."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [Path(weights_path)] if weights_path else [hub / INCEPTION_WEIGHTS, hub / TORCH_FIDELITY_WEIGHTS]
    return next((path for path in candidates if path.is_file()), None)


def inception_requirements(weights_path: str | None) -> list[str]:
    """What Inception FID/IS lack here, one sentence each: the torch-fidelity package, the weights."""
    missing = []
    if importlib.util.find_spec("torch_fidelity") is None:
        missing.append("the torch-fidelity package: pip install '.[inception]' (it pulls torchvision, so on a "
                       "stack whose CUDA torch matches it)")
    if inception_weights(weights_path) is None:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        where = weights_path or f"{hub / INCEPTION_WEIGHTS} or {hub / TORCH_FIDELITY_WEIGHTS}"
        missing.append(f"the FID Inception weights {INCEPTION_WEIGHTS} (torch-fidelity's {TORCH_FIDELITY_WEIGHTS}, "
                       f"{INCEPTION_URL}), not found at {where}: set metrics.quality.inception_weights to the "
                       f"file's path, or put it in {hub}")
    return missing


def check_inception(weights_path: str | None) -> Path:
    """The weights file, or one UserError naming everything Inception FID/IS lack and how to provide it."""
    missing = inception_requirements(weights_path)
    if missing:
        raise UserError("metrics.quality.features: 'inception' needs " + "; and ".join(missing))
    return inception_weights(weights_path)


def _rgb_uint8(images: np.ndarray) -> np.ndarray:
    """Float [0, 1] (N, C, H, W) images as uint8 with 3 channels (grey repeated)."""
    images = to_uint8(images)
    return np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images


def _inception_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def inception_fid(samples: np.ndarray, reference: np.ndarray, weights_path: str | None) -> float:
    """FID on Inception v3's 2048-d pool features of float [0, 1] images (grey made RGB)."""
    weights = check_inception(weights_path)
    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights))
    return _fid(metric.to(_inception_device()), _rgb_uint8(samples), _rgb_uint8(reference))


def inception_is(samples: np.ndarray, splits: int, weights_path: str | None) -> tuple[float, float]:
    """IS on Inception v3's logits of float [0, 1] images (grey made RGB), as :func:`inception_score`."""
    weights = check_inception(weights_path)
    # InceptionScore builds its own network without a weights path: give it one that has it
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["logits_unbiased"],
                             feature_extractor_weights_path=str(weights))
    return inception_score(_rgb_uint8(samples), net.to(_inception_device()), splits)


def check_setup(cfg: dict, has_classifier: bool) -> None:
    """Before any compute: what ``metrics.quality.features`` needs is at hand (the digit classifier,
    or torch-fidelity and the Inception weights), else one UserError saying what is missing."""
    if cfg["features"] == "classifier" and not has_classifier:
        raise UserError("metrics.quality.features: 'classifier' needs the digit classifier (--classifier)")
    if cfg["features"] == "inception":
        check_inception(cfg.get("inception_weights"))


def quality(samples: np.ndarray, reference: np.ndarray, cfg: dict, classifier: nn.Module | None = None) -> dict:
    """FID of float [0, 1] ``samples`` against ``reference`` images, and IS of the samples, with the
    network ``cfg["features"]`` names (``cfg``: ``metrics.quality``); NaN with fewer than 2 samples."""
    check_setup(cfg, classifier is not None)
    kind, n_ref, splits = cfg["features"], len(reference), cfg["is_splits"]
    enough = len(samples) >= 2
    nan = float("nan")
    if kind == "pca":
        features = PCAFeatures(reference, cfg["pca_dims"])
        return {"features": kind, "fid": frechet_distance(samples, reference, features) if enough else nan,
                "is_mean": None, "is_std": None,
                "description": f"Frechet distance between the samples and {n_ref} retain images on the top "
                               f"{features.num_features} principal components of the retain images (lower is "
                               "better); no IS, PCA features have no classes"}
    if kind == "inception":
        fid = inception_fid(samples, reference, cfg.get("inception_weights")) if enough else nan
        is_mean, is_std = inception_is(samples, splits, cfg.get("inception_weights")) if enough else (nan, nan)
        network = "Inception v3 (torch-fidelity's FID weights; grey images repeated to RGB), 2048-d pool features"
    else:
        fid = frechet_distance(samples, reference, ClassifierFeatures(classifier)) if enough else nan
        is_mean, is_std = inception_score(samples, ClassifierLogits(classifier), splits) if enough else (nan, nan)
        network = (f"the digit classifier trained on the retain set (MNIST T-shirt protocol), "
                   f"{classifier.head.in_features}-d penultimate features")
    return {"features": kind, "fid": fid, "is_mean": is_mean, "is_std": is_std,
            "description": f"FID between the samples and {n_ref} retain images on the features of {network} "
                           f"(lower is better); IS on its logits, mean +- std over {splits} splits of the samples "
                           "(higher is better)"}
