"""Stage 7, metrics: how much of the forget set a model reproduces, and how good its samples are.

Forget reproduction (the "% T-shirt" of the SISS/ReTrack MNIST protocol): the share of samples
whose L2 distance, in [0, 1] pixel space, to some distinct forget image a_j is below a threshold
tau_j. The protocol's tau = 10 over 784 pixels sits at 0.87 of the T-shirt's distance to its
nearest MNIST digit (11.49), so by default tau_j = 0.87 * d(a_j, nearest retain image): a sample
counts only if it is clearly closer to a_j than anything the model was allowed to learn
(``metrics.threshold.rule: relative``); ``absolute`` sets tau directly. The JSON says which.

Quality (a simple figure until FID/IS with a trained classifier arrive): the Frechet distance
(Heusel et al. 2017) between samples and retain images in the space of the top ``pca_dims``
principal components of the retain images, computed by torchmetrics' FID with that projection
as its feature extractor. Samples counted as forget reproductions are left out, as in the
reference protocol, so the figure measures the rest of the distribution.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from pipeline.artifacts import save_json, setup_logging
from pipeline.config import UserError, cli, load_params, stage_args
from pipeline.data import load_forget_set, load_training_set, retain_rows
from pipeline.images import to_float
from pipeline.knn import exact_search, temporary_vectors
from pipeline.sampling import load_samples


def thresholds(cfg: dict, nearest_retain: np.ndarray) -> tuple[np.ndarray, str]:
    """tau_j for each distinct forget image, and a sentence saying how it was derived."""
    if cfg["rule"] == "absolute":
        return np.full(len(nearest_retain), cfg["value"], dtype=np.float64), (
            f"absolute: L2 < {cfg['value']} in [0, 1] pixel space")
    return cfg["value"] * nearest_retain.astype(np.float64), (
        f"relative: L2 < {cfg['value']} x (L2 distance from the forget image to its nearest retain image), "
        "in [0, 1] pixel space; 0.87 = 10 / 11.49 reproduces the MNIST T-shirt protocol's threshold")


def nearest_retain_distance(images: np.ndarray, forget: dict) -> np.ndarray:
    """For each distinct forget image, the L2 distance in [0, 1] pixel space to its nearest retain image."""
    with temporary_vectors(images[retain_rows(len(images), forget["rows"])]) as retain:
        _, dist = exact_search(retain, flat_float(to_float(images[forget["distinct"]])), 1)
    return dist[:, 0]


def reproduction(samples: np.ndarray, forget_images: np.ndarray, tau: np.ndarray) -> dict:
    """Which samples lie within tau_j of forget image j, for any j.

    ``samples`` (N, C, H, W) and ``forget_images`` (m, C, H, W) in [0, 1].
    """
    sq = faiss.pairwise_distances(flat_float(samples), flat_float(forget_images))
    dist = np.sqrt(np.maximum(sq, 0))  # (N, m)
    within = dist < tau[None, :]
    hits = within.any(axis=1)
    return {
        "hits": hits,
        "rate": float(hits.mean()),
        "count": int(hits.sum()),
        "per_image_count": within.sum(axis=0).astype(int).tolist(),
        "per_image_closest": dist.min(axis=0).tolist(),
    }


def flat_float(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.float32)


class PCAFeatures(torch.nn.Module):
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


def frechet_distance(samples: np.ndarray, reference: np.ndarray, features: torch.nn.Module) -> float:
    """||mu_s - mu_r||^2 + Tr(S_s + S_r - 2 (S_s S_r)^(1/2)) of the two feature distributions."""
    fd = FrechetInceptionDistance(feature=features, normalize=True)
    fd.update(torch.from_numpy(reference), real=True)
    fd.update(torch.from_numpy(samples), real=False)
    return float(fd.compute())


def reference_images(params: dict, images: np.ndarray, forget_rows: np.ndarray) -> np.ndarray:
    """A seeded subset of ``metrics.quality.n_reference`` retain images, [0, 1] floats."""
    rows = retain_rows(len(images), forget_rows)
    n = min(params["metrics"]["quality"]["n_reference"], len(rows))
    rows = np.sort(np.random.default_rng(0).choice(rows, n, replace=False))
    return to_float(images[rows])


def evaluate(params: dict, samples: np.ndarray, train: dict, forget: dict) -> dict:
    images = train["images"]
    forget_images = to_float(images[forget["distinct"]])
    nearest_retain = nearest_retain_distance(images, forget)
    tau, rule = thresholds(params["metrics"]["threshold"], nearest_retain)
    rep = reproduction(samples, forget_images, tau)
    kept = samples[~rep["hits"]]
    reference = reference_images(params, images, forget["rows"])
    features = PCAFeatures(reference, params["metrics"]["quality"]["pca_dims"])
    quality = frechet_distance(kept, reference, features) if len(kept) >= 2 else float("nan")
    return {
        "n_samples": len(samples),
        "forget_reproduction": {
            "rate": rep["rate"],
            "count": rep["count"],
            "threshold": {**params["metrics"]["threshold"], "derivation": rule},
            "per_image": [
                {"row": int(row), "threshold": float(t), "nearest_retain_distance": float(d),
                 "reproduced": c, "closest_sample_distance": float(m)}
                for row, t, d, c, m in zip(forget["distinct"], tau, nearest_retain,
                                           rep["per_image_count"], rep["per_image_closest"])
            ],
        },
        "quality": {
            "name": "pca_fd",
            "value": quality,
            "description": (f"Frechet distance between samples and {len(reference)} retain images, on their top "
                            f"{features.num_features} principal components; lower is better; forget "
                            "reproductions excluded"),
            "n_samples_used": int(len(kept)),
        },
    }


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "samples", "data", "forget", "model-name", "out")
    params = load_params(args.params)
    log = setup_logging(args.log)
    result = evaluate(params, load_samples(args.samples), load_training_set(args.data),
                      load_forget_set(args.forget))
    save_json(args.out, {"model": args.model_name, **result})
    log.info("%s: forget reproduction %.2f %% (%d / %d), quality (PCA-FD) %.3f", args.model_name,
             100 * result["forget_reproduction"]["rate"], result["forget_reproduction"]["count"],
             result["n_samples"], result["quality"]["value"])


if __name__ == "__main__":
    main()
