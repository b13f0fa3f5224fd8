"""Stage knn: an index of the retain set R, and the K nearest retain images of each distinct forget
image, by L2 distance in ``knn.space`` (:mod:`pipeline.search.neighbours`,
:mod:`pipeline.search.embeddings`), as ReTrack needs them (methods.md 6: computed once, before
training).

Outputs: the index directory (``vectors.npy``, ``rows.npy``, ``index.faiss`` for an approximate
kind, ``index.json``), ``knn.npz`` with ``neighbours`` (rows of X, shape (n_distinct, K), nearest
first) and ``distances`` (L2 in the space, not squared), and a PNG with one row per forget image:
the image, then its neighbours.
"""

from __future__ import annotations

import numpy as np

from pipeline.artifacts import atomic_path, save_npz, setup_logging
from pipeline.data.sets import load_forget_set, load_training_set, retain_rows
from pipeline.diffusion.images import save_labelled_grid, to_float
from pipeline.params.validation import load_params
from pipeline.search.embeddings import encoder
from pipeline.search.neighbours import build_index, check_params, neighbours
from pipeline.stages.command import cli, stage_args


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "data", "forget", "index", "out", "png")
    cfg = load_params(args.params)["knn"]
    log = setup_logging(args.log)
    images = load_training_set(args.data)["images"]
    forget = load_forget_set(args.forget)
    retain = retain_rows(len(images), forget["rows"])
    check_params(cfg, len(retain))
    encode = encoder(cfg["space"], cfg["encoder"])  # loaded once: a VAE or a TorchScript model
    with atomic_path(args.index, directory=True) as tmp:
        info = build_index(tmp, images, retain, cfg, encode)
    found, dist = neighbours(args.index, images[forget["distinct"]], cfg["k"], encode, cfg["batch_size"])
    save_npz(args.out, neighbours=found, distances=dist)
    shown = np.concatenate([np.concatenate([[f], n]) for f, n in zip(forget["distinct"][:16], found)])
    save_labelled_grid(args.png, to_float(images[shown]), cfg["k"] + 1,
                       [f"row {f}: nearest at {d[0]:.2f}" for f, d in zip(forget["distinct"][:16], dist)],
                       f"Forget images and their {cfg['k']} nearest retain images ({info['kind']} index)",
                       f"left: forget image; right: nearest retain images, nearest first (L2, {info['space']} space)")
    log.info("%s index of %d retain images in %s space (dim %d) in %.1f s%s; nearest-neighbour distance of the "
             "forget images: min %.3f, median %.3f", info["kind"], info["ntotal"], info["space"], info["dim"],
             info["build_seconds"], "".join(f", {k} {v:.3f}" for k, v in info.items() if k.startswith("recall_at_")),
             dist[:, 0].min(), np.median(dist[:, 0]))


if __name__ == "__main__":
    main()
