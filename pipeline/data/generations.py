"""A memorized prompt's forget and retain sets, from the model's own generations of it.

The text-to-image protocols of the SISS and ReTrack codes (methods.md, Stable Diffusion) never use
the training image itself: they generate N images of the prompt and tell the memorized ones, which
reproduce the training image, from the rest. The forget set A is the memorized generations, the
retain set X the others, of the same prompt. Two ways to tell them apart:

- **k-means** (what both codes do): a 2-cluster k-means (faiss, seeded, best of ``redo`` runs) on
  the generations' vectors (their pixels, or copy-detection embeddings). Memorized generations are
  near-copies of one image, so their cluster is the tight one: the memorized cluster is the one
  whose members' mean squared distance to its centroid is smaller.
- **a reference image**, when the prompts file gives one: a generation is memorized when the
  cosine similarity of its vector to the reference's is at least ``threshold`` (on copy-detection
  embeddings, or on centred pixels, :func:`generation_vectors`).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.search.embeddings import cosine


@dataclass(frozen=True)
class Split:
    """``memorized`` (N,) bool: which generations are in A; ``spread`` the mean squared distance
    to their centroid of A's and of X's members, per dimension (k-means; inf for an empty side;
    NaN when the split is by similarity); ``similarity`` (N,) each generation's cosine similarity
    to the reference (NaN without one). ``centroids`` (2, D), A's first (k-means), or the
    ``reference`` (D,) and its ``threshold``: what :meth:`classify` needs for new generations."""

    memorized: np.ndarray
    spread: tuple[float, float]
    similarity: np.ndarray
    centroids: np.ndarray | None = None
    reference: np.ndarray | None = None
    threshold: float = np.nan

    def classify(self, vectors: np.ndarray) -> np.ndarray:
        """Which of new generations' ``vectors`` (M, D) are memorized, by the prompt's own rule:
        nearer to A's centroid than to X's (the references' k-means classifier), or at least
        ``threshold`` cosine similarity to the reference."""
        x = _float_rows(vectors)
        if self.centroids is None:
            return cosine(x, self.reference[None])[:, 0] >= self.threshold
        return ((x - self.centroids[0]) ** 2).sum(1) < ((x - self.centroids[1]) ** 2).sum(1)

    def arrays(self) -> dict[str, np.ndarray]:
        """The split as arrays for an .npz (:meth:`from_arrays` reads them back)."""
        empty = np.zeros((0,), dtype=np.float32)
        return {"memorized": self.memorized, "spread": np.array(self.spread), "similarity": self.similarity,
                "centroids": empty if self.centroids is None else self.centroids,
                "reference": empty if self.reference is None else self.reference,
                "threshold": np.array(self.threshold)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Split":
        return cls(np.asarray(arrays["memorized"], dtype=bool), tuple(arrays["spread"].tolist()),
                   arrays["similarity"], arrays["centroids"] if arrays["centroids"].size else None,
                   arrays["reference"] if arrays["reference"].size else None, float(arrays["threshold"]))


SPLIT_KEYS = ("memorized", "spread", "similarity", "centroids", "reference", "threshold")


def generation_vectors(images: np.ndarray, embed=None, batch_size: int = 64) -> np.ndarray:
    """The vectors a split is made on, (N, D) float32, of [0, 1] images (N, C, H, W): ``embed``'s
    (a copy-detection embedding: [0, 1] image tensors -> vectors), or the pixels less each image's
    mean, so that the cosine similarity of two is the correlation of their pixels (uncentred, a
    shared background alone makes any two images of a data set look alike)."""
    if embed is None:
        x = _float_rows(images)
        return x - x.mean(axis=1, keepdims=True)
    return np.concatenate([embed(torch.from_numpy(np.asarray(images[i:i + batch_size], dtype=np.float32))).numpy()
                           for i in range(0, len(images), batch_size)]).astype(np.float32)


def kmeans_split(vectors: np.ndarray, seed: int = 0, redo: int = 10) -> Split:
    """The tight cluster of a seeded 2-cluster k-means on ``vectors`` (N, D) as the memorized
    generations (module doc)."""
    x = _float_rows(vectors)
    if len(x) < 2:
        raise UserError(f"k-means needs at least 2 generations of a prompt, found {len(x)}")
    kmeans = faiss.Kmeans(x.shape[1], 2, niter=25, nredo=redo, seed=seed, verbose=False)
    kmeans.train(x)
    sq_dist, label = kmeans.index.search(x, 1)
    sq_dist, label = sq_dist[:, 0], label[:, 0]
    spread = [float(sq_dist[label == k].mean() / x.shape[1]) if (label == k).any() else np.inf for k in (0, 1)]
    tight = int(np.argmin(spread))
    return Split(label == tight, (spread[tight], spread[1 - tight]), np.full(len(x), np.nan),
                 centroids=kmeans.centroids[[tight, 1 - tight]].copy())


def reference_split(vectors: np.ndarray, reference: np.ndarray, threshold: float) -> Split:
    """Generations whose cosine similarity to ``reference`` (D,) is at least ``threshold``."""
    ref = _float_rows(reference[None])[0]
    similarity = cosine(_float_rows(vectors), ref[None])[:, 0]
    return Split(similarity >= threshold, (np.nan, np.nan), similarity, reference=ref, threshold=threshold)


def _float_rows(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(vectors).reshape(len(vectors), -1), dtype=np.float32)
