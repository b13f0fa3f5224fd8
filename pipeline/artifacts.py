"""Reading and writing stage outputs safely.

Every output is written to a temporary sibling and renamed into place only when complete, so a
killed job never leaves a half-written file (or model directory) that looks finished. Every input
is checked on load, and a missing or corrupt one is reported with its path.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from pipeline.errors import UserError


@contextlib.contextmanager
def atomic_path(final: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` when the block succeeds.

    On an exception the temporary file or directory is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=final.suffix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod((0o777 if directory else 0o666) & ~umask)  # mkstemp/mkdtemp create private paths
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Streamed:
    """An array written to an .npz member block by block, never whole in memory: its ``shape``,
    ``dtype`` and ``blocks()``, which yields its consecutive row blocks (arrays of shape
    (rows, *shape[1:])) each time it is called. ``np.asarray`` reads it whole (a small one)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    blocks: Callable[[], Iterable[np.ndarray]]

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate([np.zeros((0, *self.shape[1:]), dtype=self.dtype), *self.blocks()])
        return whole.astype(dtype or self.dtype, copy=False)


def save_npz(path: str | Path, **arrays: np.ndarray | Streamed) -> None:
    """An uncompressed .npz (the format of ``np.savez``), each array a ``<name>.npy`` member: one
    that :func:`load_npz` can memory-map. A :class:`Streamed` array is written as its blocks come."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                if isinstance(array, Streamed):
                    _write_streamed(member, array)
                else:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _write_streamed(member, array: Streamed) -> None:
    dtype = np.dtype(array.dtype)
    np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": tuple(array.shape)})
    rows = 0
    for block in array.blocks():
        if block.shape[1:] != tuple(array.shape[1:]):
            raise ValueError(f"block of shape {block.shape} in an array of shape {array.shape}")
        member.write(memoryview(np.ascontiguousarray(block, dtype=dtype)).cast("B"))
        rows += len(block)
    if rows != array.shape[0]:
        raise ValueError(f"{rows} rows written to an array of shape {array.shape}")


def load_npz(path: str | Path, keys: tuple[str, ...], mapped: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Load the named arrays of an .npz file; a missing, corrupt or incomplete file names its path.

    The ``mapped`` ones are memory-mapped read-only where stored uncompressed (as :func:`save_npz`
    writes them): rows are read from disk as they are indexed, so memory does not grow with the
    array, and the kernel may drop the pages it read (they are not anonymous memory)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: input file not found")
    try:
        data = np.load(path)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise UserError(f"{path}: corrupt or wrong file, not an .npz archive")
        with data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise UserError(f"{path}: corrupt or wrong file, arrays {missing} missing")
            return {k: _memory_map(path, data.zip.getinfo(f"{k}.npy")) if k in mapped else data[k] for k in keys}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error) as exc:
        raise UserError(f"{path}: corrupt file ({exc})") from exc


def _memory_map(path: Path, member: zipfile.ZipInfo) -> np.ndarray:
    """The array of an uncompressed ``.npy`` member of a zip file as a read-only memory map; a
    compressed or empty one read whole."""
    with open(path, "rb") as f:
        f.seek(member.header_offset)
        local = f.read(30)  # the zip local file header; its name and extra field follow
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        f.seek(member.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f) if member.compress_type == zipfile.ZIP_STORED else None
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        shape, fortran_order, dtype = read_header(f) if read_header else ((0,), False, None)
        offset = f.tell()
    if read_header is None or 0 in shape or dtype.hasobject:
        with zipfile.ZipFile(path) as archive, archive.open(member) as stream:
            return np.lib.format.read_array(stream, allow_pickle=False)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")


def save_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: input file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: corrupt JSON ({exc})") from exc


def to_csv(rows: list[dict]) -> str:
    """CSV text with a header: the union of the rows' keys, in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def save_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def setup_logging(log_file: str | Path | None) -> logging.Logger:
    """Log to stderr and, when given, to the stage's log file (Snakemake's `log:`)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", handlers=handlers, force=True)
    return logging.getLogger("pipeline")
