r"""Lower bounds of L2 distances from a short sketch of each vector, so that exact search reads only
the vectors the bounds cannot rule out (:func:`pipeline.search.neighbours.bounded_search`).

With U (D x m) the orthonormal top-m principal directions of a sample of the vectors (faiss
``PCAMatrix``, re-orthonormalised in float64), mu the sample's mean, the projection
p(x) = U^T (x - mu) and the residual norm r(x) = ||(x - mu) - U p(x)||, the sketch
s(x) = [p(x), r(x)] (m + 1 numbers) bounds every distance from below:

    ||x - y||^2 = ||p(x) - p(y)||^2 + ||(I - U U^T)(x - y)||^2 >= ||p(x) - p(y)||^2 + (r(x) - r(y))^2
                = ||s(x) - s(y)||^2,

by Pythagoras (U's span and its complement) and the reverse triangle inequality on the residuals.
A bound that never exceeds the true distance is what makes filter-and-refine search exact (the
lower-bounding lemma of GEMINI, Faloutsos, Ranganathan & Manolopoulos, SIGMOD 1994); principal
directions make it tight for images, whose differences are mostly low-frequency. On uniform
noise it is loose and prunes nothing (every distance is alike), and the search costs one scan.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import scipy.linalg

# m, the sketch's principal directions, and the vectors they are fitted on. For 10 queries among
# 30,000 coloured digits of 64x64x3 (benchmarks/knn_search.py's) the search reads 8.6 % of the
# vectors with m = 64 (1.64x the time of one pass over them), 2.4 % with 128 (0.49x) and 1.0 %
# with 256 (0.62x), from 512 vectors; 1.9 % with 128 from 1,024 (0.39x).
DIMS, SAMPLE = 128, 1024

# Squared distances are computed as |q|^2 + |v|^2 - 2 q.v in float32 and the sketches are float32
# products: a bound is trusted only to this fraction of the larger squared norm involved.
TOLERANCE = 1e-4


class LowerBounds:
    """The sketches of a set of vectors and the projection that made them."""

    def __init__(self, mean: np.ndarray, basis: np.ndarray, sketches: np.ndarray, scale: float):
        self.mean, self.basis = mean, basis  # (D,) and (D, m) float32
        self.sketches = sketches  # (N, m + 1) float64
        self.sketch_norms = (sketches**2).sum(1)
        self.scale = scale  # the largest squared norm of a vector, raw or centred

    @staticmethod
    def projection(sample: np.ndarray, dims: int = DIMS) -> tuple[np.ndarray, np.ndarray]:
        """The mean and orthonormal top-``dims`` principal directions (D, m) of ``sample`` (float32 rows)."""
        dims = max(1, min(dims, *sample.shape))
        pca = faiss.PCAMatrix(sample.shape[1], dims)
        pca.train(np.ascontiguousarray(sample, dtype=np.float32))
        mean = faiss.vector_to_array(pca.mean).astype(np.float32)
        directions = np.asfortranarray(faiss.vector_to_array(pca.A).reshape(dims, -1).T, dtype=np.float64)
        del pca
        # scipy's economic QR in place: numpy's holds 10x the (D, m) matrix (1.1 GB at CelebA-HQ's D)
        basis, _ = scipy.linalg.qr(directions, mode="economic", overwrite_a=True, check_finite=False)
        return mean, basis.astype(np.float32)

    @staticmethod
    def sketch(block: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """s(x) of each float32 row of ``block`` (n, m + 1), and each row's max(|x|^2, |x - mu|^2)."""
        centred = block - mean
        projected = centred @ basis
        residual = np.linalg.norm(centred - projected @ basis.T, axis=1)
        norms = np.maximum(np.einsum("ij,ij->i", block, block), np.einsum("ij,ij->i", centred, centred))
        return np.hstack([projected.astype(np.float64), residual[:, None].astype(np.float64)]), norms

    @classmethod
    def build(cls, sample: np.ndarray, blocks, dims: int = DIMS) -> "LowerBounds":
        """Fit the projection on ``sample`` and sketch every block of ``blocks`` (float32 rows, in order)."""
        mean, basis = cls.projection(sample, dims)
        sketched = [cls.sketch(block, mean, basis) for block in blocks]
        scale = float(max(norms.max() for _, norms in sketched))
        return cls(mean, basis, np.concatenate([s for s, _ in sketched]), scale)

    def squared(self, queries: np.ndarray) -> np.ndarray:
        """Lower bounds (Q, N) of the squared distances from float32 ``queries`` to every vector,
        less each query's rounding tolerance: a vector whose bound exceeds a distance d^2 is
        farther than d as the search computes distances too (in float32, whether faiss's scan or
        :func:`pipeline.search.neighbours.bounded_search`). ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b in float64."""
        sketched, norms = self.sketch(queries, self.mean, self.basis)
        bound = (sketched**2).sum(1)[:, None] + self.sketch_norms[None, :] - 2 * sketched @ self.sketches.T
        tolerance = TOLERANCE * (norms.astype(np.float64) + self.scale)
        return np.maximum(bound, 0) - tolerance[:, None]

    def save(self, path: str | Path) -> None:
        """Into ``path`` (.npz), inside an index directory that is itself written atomically."""
        np.savez(path, mean=self.mean, basis=self.basis, sketches=self.sketches, scale=self.scale)

    @classmethod
    def load(cls, path: str | Path) -> "LowerBounds":
        with np.load(path) as z:
            return cls(z["mean"], z["basis"], z["sketches"], float(z["scale"]))
