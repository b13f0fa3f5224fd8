"""Stage 4, knn: a faiss index of the retain set and the K nearest retain images of each
distinct forget image, by Euclidean distance between clean images in pixel space ([0, 1]
values, flattened), as ReTrack needs them (methods.md 6: computed once, before training).

Outputs: the index (``faiss.write_index``), ``knn.npz`` with ``neighbours`` (rows of X, shape
(n_distinct, K), nearest first) and ``distances`` (L2, not squared), and a PNG with one row per
forget image: the image, then its neighbours.
"""

from __future__ import annotations

import faiss
import numpy as np

from pipeline.artifacts import atomic_path, load_npz, save_npz, setup_logging
from pipeline.config import UserError, cli, load_params, stage_args
from pipeline.data import load_training_set
from pipeline.forget import load_forget_set, retain_rows
from pipeline.images import grid, save_png, to_float


def flat(images: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) to float32 (N, C*H*W) in [0, 1], C-contiguous as faiss wants."""
    return np.ascontiguousarray(to_float(images).reshape(len(images), -1))


def exact_index(vectors: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    return index


def nearest(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the index and L2 distances of the k nearest vectors of each query."""
    sq_dist, pos = index.search(queries, k)
    return pos, np.sqrt(np.maximum(sq_dist, 0))


def load_knn(path) -> dict[str, np.ndarray]:
    return load_npz(path, ("neighbours", "distances"))


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "data", "forget", "index", "out", "png")
    params = load_params(args.params)
    log = setup_logging(args.log)
    images = load_training_set(args.data)["images"]
    forget = load_forget_set(args.forget)
    retain = retain_rows(len(images), forget["rows"])
    k = params["knn"]["k"]
    if k > len(retain):
        raise UserError(f"knn.k: {k} neighbours asked for, but the retain set has only {len(retain)} images")
    index = exact_index(flat(images[retain]))
    pos, dist = nearest(index, flat(images[forget["distinct"]]), k)
    with atomic_path(args.index) as tmp:
        faiss.write_index(index, str(tmp))
    save_npz(args.out, neighbours=retain[pos], distances=dist)
    shown = forget["distinct"][:16]
    rows = np.concatenate([np.concatenate([[f], retain[p]]) for f, p in zip(shown, pos)])
    save_png(args.png, grid(to_float(images[rows]), ncols=k + 1), scale=4)
    log.info("retain index of %d images (dim %d); nearest-neighbour distance of the forget images: "
             "min %.3f, median %.3f", index.ntotal, index.d, dist[:, 0].min(), np.median(dist[:, 0]))


if __name__ == "__main__":
    main()
