"""Deletion requests: which training images a request names, checked against the training set.

A request is a YAML file:

    id: req-2026-0142              # how the request is known (required)
    date: 2026-12-01               # when it arrived (required)
    images:                        # what to delete, each by exactly one of
      - name: mnist-train-00042    #   its name in the training set (data/train.npz ``names``)
      - path: photos/leaked.png    #   an image file, relative to the request's directory, resized as the
                                   #   training images are (data.resolution, data.channels)
      - sha256: 3f1c...            #   the SHA-256 of its pixels: the bytes of the uint8 (C, H, W) array

Every image must be in the training set: one that is not stops the stage with its entry named.
The forget set is what the request names, every identical copy of it, and its near-duplicates
(:func:`pipeline.data.forget_sets.choose_requested`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import yaml

from pipeline.data.sources import forget_image
from pipeline.errors import UserError

KINDS = ("name", "path", "sha256")


def pixel_sha256(image: np.ndarray) -> str:
    """The SHA-256 of an image's pixels: the bytes of its uint8 (C, H, W) array."""
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


def read_request(path: str | Path) -> dict:
    """The request in ``path``, its structure checked (module doc): id, date, and images."""
    path = Path(path)
    try:
        request = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: not a readable deletion request ({exc})") from exc
    if not isinstance(request, dict) or set(request) != {"id", "date", "images"}:
        found = sorted(request) if isinstance(request, dict) else type(request).__name__
        raise UserError(f"{path}: a deletion request has exactly the keys id, date and images; found {found}")
    if not isinstance(request["images"], list) or not request["images"]:
        raise UserError(f"{path}: images: expected a non-empty list of images to delete")
    for i, item in enumerate(request["images"]):
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in KINDS:
            raise UserError(f"{path}: images[{i}]: expected one of {', '.join(KINDS)}, got {item!r}")
    return {**request, "id": str(request["id"]), "date": str(request["date"])}


def requested_images(request: dict, path: str | Path, names: np.ndarray, images: np.ndarray,
                     first: np.ndarray) -> list[tuple[int, str]]:
    """For each entry of ``request`` (read from ``path``): the distinct training image it names, as
    an index into ``first`` (one row of X per distinct image), and how it was named. ``names``
    and ``images`` are the training set's."""
    distinct = {pixel_sha256(images[row]): d for d, row in enumerate(first)}
    found = []
    for i, item in enumerate(request["images"]):
        kind, value = next(iter(item.items()))
        if kind == "name":
            rows = np.flatnonzero(names == str(value))
            digest = pixel_sha256(images[rows[0]]) if len(rows) else None
        elif kind == "path":
            digest = pixel_sha256(forget_image(str(Path(path).parent / str(value)), images.shape[-1], images.shape[1]))
        else:
            digest = str(value).lower()
        if digest not in distinct:
            raise UserError(f"{path}: images[{i}] ({kind} {value}): not in the training set")
        found.append((distinct[digest], f"requested by {kind}"))
    return found
