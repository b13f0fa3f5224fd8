"""Copy detection: SSCD similarity of a reconstruction to its original, and a normalized SSCD.

SSCD (Pizzi et al. 2022, "A Self-Supervised Descriptor for Image Copy Detection") embeds an image
so that the cosine similarity of two descriptors is high exactly when one image is a copy of the
other. Given by path (``metrics.copy_detection.sscd``, e.g. ``sscd_disc_mixup.torchscript.pt``),
images are resized to 288 x 288, grey is repeated to RGB, and ImageNet's mean and std normalize
them, as in the SSCD evaluation protocol (methods.md). Without that file (its weights cannot be
downloaded here) the embedding falls back to the penultimate features of the digit classifier
(:mod:`pipeline.evaluation.classifier`); every output names the embedding and says ``fallback``. The
fallback is not a copy detector: it is blind to what does not change a digit's class.

Normalized SSCD. A low similarity s(r, x) between the reconstruction r and the forget image x
is also what a broken model gets (noise, a blank image, a destroyed x). Genuine forgetting means
more: r is unlike x *and* like the data the model keeps. With cosine similarities s, the K
nearest retain images n_j of x (from the knn stage), and held-out images u of the same
distribution as the chance reference:

    m = clip((s(r, x) - b) / (1 - b), 0, 1)         similarity to x above chance, b = mean_u s(u, x)
    p = clip((q(r) - b_n) / (c - b_n), 0, 1)        plausibility: q(r) = max_j s(r, n_j),
                                                    b_n = mean_u q(u), c = q(x)
    nSSCD = 1 - p (1 - m)

Each similarity is measured against what an unrelated image gets (b, b_n) and against what x
itself gets (1, c). nSSCD is 1 for a copy of x (m = 1). Noise, a blank or a destroyed image are
no closer to x's retain neighbours than an unrelated image (p ~ 0), so they score near 1, not as
forgetting. When r is one of x's retain neighbours n (p = 1) it scores m(n), how far the model's
replacement is from x, down to 0 for a plausible image no more like x than chance. Lower is more
forgetting; compare with the retrained model's reconstruction, which is what forgetting should
give. It depends on similarities only, so it is invariant to the embedding's scale, and to any
rescaling s -> a + (1 - a) s of similarities that keeps s(x, x) = 1. The properties hold in
expectation and for an informative embedding; the tests check them on a synthetic one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.search.embeddings import cosine, load_torchscript

SSCD_SIZE = 288


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Embedding:
    """An image embedding for copy detection: [0, 1] images (B, C, H, W) -> vectors (B, D)."""

    name: str
    fallback: bool
    embed: Callable[[torch.Tensor], torch.Tensor]

    def describe(self) -> str:
        return f"{self.name} (fallback: no SSCD model given, not a copy detector)" if self.fallback else self.name


def sscd_preprocess(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to SSCD's input: RGB, 288 x 288, ImageNet-normalized."""
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    images = F.interpolate(images, size=(SSCD_SIZE, SSCD_SIZE), mode="bilinear", antialias=True,
                           align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def sscd_embedding(path: str | Path) -> Embedding:
    path = Path(path)
    model = load_torchscript(path, "SSCD model not found (metrics.copy_detection.sscd: a TorchScript file such as "
                                   "sscd_disc_mixup.torchscript.pt, or null for the fallback embedding)")

    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        return model(sscd_preprocess(images)).flatten(1)

    return Embedding(f"SSCD ({path.name})", False, embed)


def classifier_embedding(classifier: torch.nn.Module) -> Embedding:
    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        return classifier.features(images).flatten(1)

    return Embedding("digit-classifier features", True, embed)


def normalized_sscd(recon: np.ndarray, original: np.ndarray, neighbours: np.ndarray,
                    unrelated: np.ndarray) -> dict:
    """nSSCD of reconstructions of one forget image (module docstring), from embeddings:
    ``recon`` (R, D), ``original`` (D,), ``neighbours`` (K, D), ``unrelated`` (U, D).

    Returns the per-reconstruction ``nsscd``, ``similarity`` s(r, x) and ``plausibility`` p, and
    the image's ``chance`` b, ``neighbour_chance`` b_n and ``neighbour_similarity`` c."""
    x = original[None]
    b = float(cosine(x, unrelated).mean())
    b_n = float(cosine(unrelated, neighbours).max(axis=1).mean())
    c = float(cosine(x, neighbours).max())
    s = cosine(recon, x)[:, 0]
    q = cosine(recon, neighbours).max(axis=1)
    m = np.clip((s - b) / (1 - b), 0, 1)
    p = np.clip((q - b_n) / max(c - b_n, 1e-12), 0, 1)
    return {"nsscd": 1 - p * (1 - m), "similarity": s, "plausibility": p, "chance": b, "neighbour_chance": b_n,
            "neighbour_similarity": c}
