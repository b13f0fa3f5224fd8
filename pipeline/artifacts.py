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
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

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


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_npz(path: str | Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load the named arrays of an .npz file; a missing, corrupt or incomplete file names its path."""
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
            return {k: data[k] for k in keys}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: corrupt file ({exc})") from exc


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
