"""Image conversions shared by the stages: resizing, channel handling, grids, PNG files.

Arrays are float32 in [0, 1] with shape (N, C, H, W) unless a function says otherwise; models
see ``2x - 1`` in [-1, 1] (see :mod:`pipeline.diffusion.models`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.artifacts import atomic_path, load_npz


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats to 0..255 integers, rounding to nearest."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def to_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


def square_resize(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """Centre-crop a PIL image to a square, resize it (Lanczos), and return uint8 (C, H, W)."""
    if image.mode.startswith("I;16"):  # 16-bit grey: keep the high byte (convert() would clip)
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8))
    image = image.convert("L" if channels == 1 else "RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def flat_float(images: np.ndarray) -> np.ndarray:
    """Images (N, ...) as contiguous float32 rows (N, prod(...)), for distance computations."""
    return np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.float32)


def grid(images: np.ndarray, ncols: int | None = None, pad: int = 1, pad_value: float = 0.5) -> np.ndarray:
    """Tile (N, C, H, W) images into one (H', W', C) array with ``pad`` pixels between them."""
    n, c, h, w = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, dtype=np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[y : y + h, x : x + w] = image.transpose(1, 2, 0)
    return out


def save_png(path: str | Path, image: np.ndarray, scale: int = 1) -> None:
    """Save an (H, W, C) [0, 1] array as PNG, each pixel repeated ``scale`` times (nearest)."""
    array = to_uint8(image)
    if scale > 1:
        array = array.repeat(scale, axis=0).repeat(scale, axis=1)
    pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")


def save_labelled_grid(path: str | Path, images: np.ndarray, ncols: int, row_labels: list[str], title: str,
                       xlabel: str) -> None:
    """A grid of (N, C, H, W) [0, 1] images as a PNG figure with a label beside each row."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global state involved

    tiles = grid(images, ncols=ncols)
    step = images.shape[2] + 1
    nrows = len(row_labels)
    fig = Figure(figsize=(2.5 + 0.45 * ncols, 0.9 + 0.45 * nrows), layout="constrained")
    ax = fig.subplots()
    ax.imshow(tiles[..., 0] if tiles.shape[-1] == 1 else tiles, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([0.5 + step * (r + 0.5) - 0.5 for r in range(nrows)], row_labels, fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def load_samples(path) -> np.ndarray:
    """The samples a sample stage wrote: float32 (N, C, H, W) in [0, 1]."""
    return load_npz(path, ("samples",))["samples"]
