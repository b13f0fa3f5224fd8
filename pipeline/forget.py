"""Stage 3, select_forget: which rows of the training set X form the forget set A.

Strategies (``forget.strategy``): ``injected`` (every injected copy, the benchmark setting),
``label`` (every row with a given label) or ``indices`` (an explicit list of rows). R = X \\ A.

Output ``forget.npz``: ``rows`` (rows of X in A), ``group`` (for each row of A, which distinct
image it is: identical copies share one group) and ``distinct`` (one row of X per group).
Metrics and neighbour search work on the distinct images; training draws from all rows.
"""

from __future__ import annotations

import numpy as np

from pipeline.artifacts import load_npz, save_npz, setup_logging
from pipeline.config import UserError, cli, load_params, stage_args
from pipeline.data import load_training_set
from pipeline.images import grid, save_png, to_float


def select_rows(params: dict, train: dict[str, np.ndarray]) -> np.ndarray:
    cfg = params["forget"]
    n = len(train["images"])
    if cfg["strategy"] == "injected":
        rows = np.flatnonzero(train["injected"] >= 0)
    elif cfg["strategy"] == "label":
        rows = np.flatnonzero(train["labels"] == cfg["label"])
    else:
        rows = np.unique(np.asarray(cfg["indices"], dtype=np.int64))
        if rows.max() >= n:
            raise UserError(f"forget.indices: row {rows.max()} is out of range; the training set has {n} rows")
    if len(rows) == 0:
        raise UserError(f"forget.strategy {cfg['strategy']!r} selects no image; the forget set would be empty")
    if len(rows) == n:
        raise UserError(f"forget.strategy {cfg['strategy']!r} selects every image; the retain set would be empty")
    return rows


def group_identical(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each image, the index of its group of byte-identical images, and one member per group."""
    flat = images.reshape(len(images), -1)
    _, first, group = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    return group.reshape(-1), first


def load_forget_set(path) -> dict[str, np.ndarray]:
    return load_npz(path, ("rows", "group", "distinct"))


def retain_rows(n: int, forget_rows: np.ndarray) -> np.ndarray:
    """R = X \\ A as rows of X."""
    return np.setdiff1d(np.arange(n), forget_rows)


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "data", "out", "png")
    params = load_params(args.params)
    log = setup_logging(args.log)
    train = load_training_set(args.data)
    rows = select_rows(params, train)
    group, first = group_identical(train["images"][rows])
    distinct = rows[first]
    save_npz(args.out, rows=rows, group=group, distinct=distinct)
    save_png(args.png, grid(to_float(train["images"][distinct[:64]])), scale=4)
    log.info("forget set: %d rows, %d distinct images; retain set: %d rows",
             len(rows), len(distinct), len(train["images"]) - len(rows))


if __name__ == "__main__":
    main()
