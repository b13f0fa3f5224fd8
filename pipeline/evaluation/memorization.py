"""Whether a model's samples reproduce the forget images.

- Forget reproduction (the "% T-shirt" of the SISS/ReTrack MNIST protocol): the share of samples
  whose L2 distance, in [0, 1] pixel space, to some distinct forget image a_j is below tau_j. The
  protocol's tau = 10 over 784 pixels sits at 0.87 of the T-shirt's distance to its nearest MNIST
  digit (11.49), so by default tau_j = 0.87 * d(a_j, nearest retain image)
  (``metrics.threshold.rule: relative``); ``absolute`` sets tau directly. The JSON says which.
- Nearest-neighbour memorization: the share of samples whose nearest distinct training image is a
  forget image and lies much closer than the second nearest, d_1 < ``ratio`` * d_2 (a relative
  distance test like that of training-data extraction, Carlini et al. 2023; identical copies count
  as one image, or the test could never pass for a duplicated image).
"""

from __future__ import annotations

import faiss
import numpy as np

from pipeline.data.sets import group_identical, retain_rows
from pipeline.diffusion.images import flat_float, to_float
from pipeline.search.neighbours import exact_search, temporary_vectors


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
    with temporary_vectors(images, rows=retain_rows(len(images), forget["rows"])) as retain:
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


def nn_memorization(samples: np.ndarray, images: np.ndarray, forget: dict, ratio: float) -> dict:
    """Samples whose nearest distinct training image is a forget image, at d_1 < ratio * d_2."""
    group, first = group_identical(images)
    is_forget = np.isin(np.arange(len(first)), group[forget["rows"]])
    with temporary_vectors(images, rows=first) as distinct:
        pos, dist = exact_search(distinct, flat_float(samples), 2)
    hits = is_forget[pos[:, 0]] & (dist[:, 0] < ratio * dist[:, 1])
    return {"rate": float(hits.mean()), "count": int(hits.sum()), "ratio": ratio,
            "description": "nearest distinct training image is a forget image and d1 < ratio x d2"}
