"""The sets that the data stages write and every later stage reads: the training set X, the
held-out images, the forget set A (rows of X) and the K nearest retain images of A's distinct
images; and the forget set that each model is judged on (:func:`forget_of`).

``train.npz``: ``images`` uint8 (N, C, H, W), ``labels``, ``injected``, ``names``
(:mod:`pipeline.data.training_set`); ``heldout.npz``: ``images``, ``labels``, ``names``;
``forget.npz``: ``rows`` (rows of X in A), ``group`` (for each row of A, which distinct image it
is) and ``distinct`` (one row of X per group); ``knn.npz``: ``neighbours`` (rows of X, (n_distinct,
K), nearest first) and ``distances``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.artifacts import load_npz
from pipeline.errors import UserError
from pipeline.params.runs import REFERENCE_MODELS, Run


def load_training_set(path: str | Path) -> dict[str, np.ndarray]:
    return load_npz(path, ("images", "labels", "injected", "names"))


def group_identical(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each image, the index of its group of byte-identical images, and one member per group."""
    flat = images.reshape(len(images), -1)
    _, first, group = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    return group.reshape(-1), first


def load_heldout_set(path: str | Path) -> dict[str, np.ndarray]:
    return load_npz(path, ("images", "labels", "names"))


def load_forget_set(path) -> dict[str, np.ndarray]:
    """The forget set A written by the forget_set stage (:mod:`pipeline.data.forget_sets`)."""
    return load_npz(path, ("rows", "group", "distinct"))


def retain_rows(n: int, forget_rows: np.ndarray) -> np.ndarray:
    """R = X \\ A as rows of X."""
    return np.setdiff1d(np.arange(n), forget_rows)


def forget_of(model: str, forget: dict, knn: dict | None = None) -> tuple[dict, dict | None]:
    """The forget set that ``model`` unlearns and is judged on, with its neighbours from the knn
    stage: for a per-image run (``retrack-s0-i3``, :class:`pipeline.params.runs.Run`) the ``image``-th
    distinct forget image in row order with its identical copies, so that its retain set is
    everything else, the other forget images included; for every other model the whole set."""
    image = None if model in REFERENCE_MODELS else Run.parse(model).image
    if image is None:
        return forget, knn
    order = np.argsort(forget["distinct"])
    if image >= len(order):
        raise UserError(f"{model}: forget image {image} asked for, but the forget set has {len(order)} distinct "
                        "images (identical images merge into one; experiment.per_image counts them from params)")
    group = order[image]
    copies = forget["group"] == group
    one = {"rows": forget["rows"][copies], "group": np.zeros(int(copies.sum()), dtype=np.int64),
           "distinct": forget["distinct"][[group]]}
    return one, None if knn is None else {key: value[[group]] for key, value in knn.items()}


def load_knn(path) -> dict[str, np.ndarray]:
    """The K nearest retain images of each distinct forget image, as the knn stage wrote them."""
    return load_npz(path, ("neighbours", "distances"))
