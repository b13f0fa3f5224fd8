"""The sets that the data stages write and every later stage reads: the training set X, the
held-out images, the forget set A (rows of X) and the K nearest retain images of A's distinct
images; and the forget set that each model is judged on (:func:`forget_of`).

``train.npz``: ``images`` uint8 (N, C, H, W), ``labels``, ``injected``, ``names``
(:mod:`pipeline.data.training_set`); ``heldout.npz``: ``images``, ``labels``, ``names``;
``forget.npz``: ``rows`` (rows of X in A), ``group`` (for each row of A, which distinct image it
is), ``distinct`` (one row of X per group) and ``request`` (per group, which request of
``experiment.requests`` took it, 0 without them); ``knn.npz``: ``neighbours`` (rows of X,
(n_distinct, K), nearest first) and ``distances``.

The images of ``train.npz`` and ``heldout.npz`` are memory-mapped (:func:`pipeline.artifacts.load_npz`):
a stage reads the rows it indexes, so its memory does not grow with the data set; a pass over
all of them goes block by block (:func:`row_blocks`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.artifacts import load_npz
from pipeline.errors import UserError
from pipeline.params.runs import REFERENCE_MODELS, Run

BLOCK_BYTES = 64 * 2**20  # the images of one block of a pass over a data set


def load_training_set(path: str | Path) -> dict[str, np.ndarray]:
    return load_npz(path, ("images", "labels", "injected", "names"), mapped=("images",))


def row_blocks(images: np.ndarray, rows: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """The images (or the ``rows`` of them, in their order) in consecutive blocks of at most
    :data:`BLOCK_BYTES`, each read into memory."""
    rows = np.arange(len(images)) if rows is None else rows
    step = max(1, BLOCK_BYTES // max(1, images[0].nbytes if len(images) else 1))
    for start in range(0, len(rows), step):
        yield np.asarray(images[rows[start:start + step]])


def image_digests(images: np.ndarray) -> np.ndarray:
    """A 128-bit BLAKE2b digest of each image's bytes, as rows of 16 uint8."""
    return np.array([np.frombuffer(hashlib.blake2b(image.tobytes(), digest_size=16).digest(), dtype=np.uint8)
                     for block in row_blocks(images) for image in block]).reshape(-1, 16)


def group_identical(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each image, the index of its group of byte-identical images, and one member per group
    (its first row); groups are numbered in the order of their first rows. Images are compared by
    their digests (:func:`image_digests`; a collision has probability about N^2 / 2^129), so
    memory holds 16 bytes per image, not the images."""
    _, first, group = np.unique(image_digests(images), axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    return renumber[group.reshape(-1)], first[order]


def load_heldout_set(path: str | Path) -> dict[str, np.ndarray]:
    return load_npz(path, ("images", "labels", "names"), mapped=("images",))


def load_forget_set(path) -> dict[str, np.ndarray]:
    """The forget set A written by the forget_set stage (:mod:`pipeline.data.forget_sets`)."""
    return load_npz(path, ("rows", "group", "distinct", "request"))


def retain_rows(n: int, forget_rows: np.ndarray) -> np.ndarray:
    """R = X \\ A as rows of X."""
    return np.setdiff1d(np.arange(n), forget_rows)


def subset(forget: dict, knn: dict | None, groups: np.ndarray) -> tuple[dict, dict | None]:
    """The part of the forget set made of the distinct images ``groups`` (with their copies), and
    their neighbours."""
    copies = np.isin(forget["group"], groups)
    renumber = np.full(len(forget["distinct"]), -1, dtype=np.int64)
    renumber[groups] = np.arange(len(groups))
    part = {"rows": forget["rows"][copies], "group": renumber[forget["group"][copies]],
            "distinct": forget["distinct"][groups], "request": forget["request"][groups]}
    return part, None if knn is None else {key: value[groups] for key, value in knn.items()}


def forget_of(model: str, forget: dict, knn: dict | None = None) -> tuple[dict, dict | None]:
    """The forget set that ``model`` is judged on, with its neighbours from the knn stage: for a
    per-image run (``retrack-s0-i3``, :class:`pipeline.params.runs.Run`) the ``image``-th distinct
    forget image in row order with its identical copies, so that its retain set is everything
    else, the other forget images included; for every other model the whole set (a run of a
    sequence of requests too: it is judged on every request's images, earlier and later ones)."""
    image = None if model in REFERENCE_MODELS else Run.parse(model).image
    if image is None:
        return forget, knn
    order = np.argsort(forget["distinct"])
    if image >= len(order):
        raise UserError(f"{model}: forget image {image} asked for, but the forget set has {len(order)} distinct "
                        "images (identical images merge into one; experiment.per_image counts them from params)")
    return subset(forget, knn, order[[image]])


def unlearned_by(run: Run, forget: dict, knn: dict | None) -> tuple[dict, dict | None]:
    """What ``run`` unlearns: the images of its request for a step of ``experiment.requests``
    (``retrack-s0-q2``: the second request's), else the set it is judged on (:func:`forget_of`)."""
    if run.request is None:
        return forget_of(run.name, forget, knn)
    return subset(forget, knn, np.flatnonzero(forget["request"] == run.request - 1))


def deleted_rows(run: Run, forget: dict) -> np.ndarray:
    """The rows of X that ``run``'s model must no longer hold, outside its retain set: for a step
    of a sequence of requests, those of its request and of every earlier one (a later request's
    images are still training data when it runs); else the rows it unlearns."""
    if run.request is None:
        return unlearned_by(run, forget, None)[0]["rows"]
    return subset(forget, None, np.flatnonzero(forget["request"] < run.request))[0]["rows"]


def requests_by_row(forget: dict) -> dict[int, int]:
    """Which request (its index in ``experiment.requests``, 0 without them) took each distinct
    forget image, by the image's row."""
    return {int(row): int(k) for row, k in zip(forget["distinct"], forget["request"])}


def load_knn(path) -> dict[str, np.ndarray]:
    """The K nearest retain images of each distinct forget image, as the knn stage wrote them."""
    return load_npz(path, ("neighbours", "distances"))
