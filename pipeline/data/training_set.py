"""Building the training set X = base images + injected forget images, and the held-out images,
from params and the base images (:mod:`pipeline.data.sources`); :mod:`pipeline.data.sets` reads them.

Output ``train.npz``: ``images`` uint8 (N, C, H, W); ``labels`` int64 (-1 for injected rows);
``injected`` int64, the index in ``data.inject`` of an injected row, -1 for base rows; ``names``
str, what a deletion request names: ``mnist-train-00042`` (the row of the 60,000 MNIST training
digits; ``cifar10-train-00042`` for a torchvision data set, its name lowercased), the path
relative to the folder, or the ``data.inject`` entry's ``image``.

Output ``heldout.npz`` (``images``, ``labels``, ``names``): ``data.heldout`` images of the same
source that the models never see: test images (``mnist-test-01234``), or images drawn (seeded)
from the folder before the training subset is, never one that ``forget.files`` names. They are
the digit classifier's test set and the non-members of the membership inference attack
(:mod:`pipeline.evaluation.probes`).
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import numpy as np

from pipeline.artifacts import Streamed
from pipeline.data.sources import folder_images, forget_image, raw_split, resize_images
from pipeline.errors import UserError

BLOCK_ROWS = 256  # images read (a folder's: decoded and resized) and written at a time


def split_heldout(params: dict, base: Path | None) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """The base images a training set may draw from, and ``data.heldout`` held-out images, each as
    (images, labels, names): the training and (seeded choice of) test images of MNIST or of a
    torchvision data set, or a seeded split of the folder that holds out no image ``forget.files``
    names (it is to be forgotten, so it must be trained on). A folder's base images are
    :class:`~pipeline.data.sources.ImageFiles`, read when written."""
    cfg = params["data"]
    res, ch, n = cfg["resolution"], cfg["channels"], cfg["heldout"]
    rng = np.random.default_rng(cfg["seed"] + 1)
    source = cfg["source"]
    if source["kind"] != "folder":
        name = "MNIST" if source["kind"] == "mnist" else source["dataset"]
        test_images, test_labels = raw_split(params, base, "test")
        if n > len(test_images):
            raise UserError(f"data.heldout: {n} held-out images requested, but {name} has {len(test_images)} "
                            "test images")
        keep = np.sort(rng.choice(len(test_images), n, replace=False))
        heldout = (resize_images(test_images[keep], res, ch), test_labels[keep],
                   np.array([f"{name.lower()}-test-{i:05d}" for i in keep]))
        images, labels = raw_split(params, base, "train")
        names = np.array([f"{name.lower()}-train-{i:05d}" for i in range(len(images))])
        return (resize_images(images, res, ch), labels, names), heldout
    images, labels, names = folder_images(base, res, ch)
    forget = params["forget"]
    free = np.flatnonzero(~np.isin(names, forget["files"] if forget["strategy"] == "files" else []))
    if n >= len(images) or n > len(free):
        named = f", {len(images) - len(free)} of them named in forget.files" if len(free) < len(images) else ""
        raise UserError(f"data.heldout: {n} held-out images requested, but {base} has only {len(images)} images"
                        f"{named}; the rest must be left to train on")
    out = np.zeros(len(images), dtype=bool)
    out[rng.choice(free, n, replace=False)] = True
    train = (images.take(np.flatnonzero(~out), axis=0), labels[~out], names[~out])
    return train, (images[out], labels[out], names[out])


def build_training_set(params: dict, base: Path | None) -> tuple[dict, dict[str, np.ndarray]]:
    """The training set, base images (a seeded subset of ``limit``) followed by each injected
    image's copies, and the held-out set (:func:`split_heldout`). The training images are
    :class:`~pipeline.artifacts.Streamed`: read (from a folder) block by block as they are written.

    ``base`` is the output of ``fetch`` for ``data.source.kind: mnist``, the image folder
    (``data.source.path``) for ``folder``, unused for ``torchvision`` (``data.torchvision.root``).
    The forget images are read first, so that a bad ``data.inject`` stops the stage at once.
    """
    cfg = params["data"]
    res, ch = cfg["resolution"], cfg["channels"]
    forget = [forget_image(item["image"], res, ch, cfg.get("torchvision")) for item in cfg["inject"]]
    (images, labels, names), heldout = split_heldout(params, base)
    limit = cfg["source"].get("limit")
    rng = np.random.default_rng(cfg["seed"])
    if limit and limit < len(images):
        keep = np.sort(rng.choice(len(images), limit, replace=False))
        images, labels, names = images.take(keep, axis=0), labels[keep], names[keep]
    copies = [item["copies"] for item in cfg["inject"]]
    train = {"images": Streamed((len(images) + sum(copies), ch, res, res), np.uint8, lambda: chain(
                 (images[start:start + BLOCK_ROWS] for start in range(0, len(images), BLOCK_ROWS)),
                 (np.repeat(image[None], n, axis=0) for image, n in zip(forget, copies)))),
             "labels": np.concatenate([labels, np.full(sum(copies), -1, dtype=np.int64)]),
             "injected": np.concatenate([np.full(len(images), -1, dtype=np.int64),
                                         np.repeat(np.arange(len(copies), dtype=np.int64), copies)]),
             "names": np.concatenate([names.astype(str), *(np.full(n, item["image"]) for item, n in
                                                           zip(cfg["inject"], copies))])}
    return train, dict(zip(("images", "labels", "names"), heldout))
