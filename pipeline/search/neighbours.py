"""Nearest neighbours, exact and approximate: an index of the retain set R and the K nearest
retain images of each distinct forget image, by L2 distance in ``knn.space`` (pixels, a VAE
latent space or an embedding; see :mod:`pipeline.search.embeddings`), as ReTrack needs them
(methods.md 6: computed once, before training).

Search is faiss throughout:

- ``flat`` (default): exact search. The vectors stay in a memory-mapped file (pixels as uint8,
  :mod:`pipeline.search.embeddings`) and are read in blocks, each turned into float32 as it is
  read, so memory is bounded by a block, not by the data set (CelebA-HQ in pixels is 30,000 x
  196,608 bytes = 5.9 GB). The index keeps a short sketch of each vector whose distances bound
  the true ones from below (:mod:`pipeline.search.bounds`): a forget set's search reads only the
  vectors the bounds cannot rule out (:func:`bounded_search`), a few per cent of them for
  images. The scans run on the GPUs when faiss is a GPU build (``faiss-gpu`` instead of
  ``faiss-cpu``) and one is visible.
- ``ivf``, ``hnsw``, ``ivfpq``: approximate indexes for large sets (faiss ``IVF<nlist>,Flat``,
  ``HNSW<m>`` and ``IVF<nlist>,PQ<pq_m>x4fs``, 4-bit fast-scan product codes). Their candidates
  (4K of them) are re-ranked by exact distance, and their recall@K against exact search is
  measured on a seeded sample of retain images and written into ``index.json``. They are built
  and searched on the CPU.

An index is a directory: ``vectors.npy`` the retain set's vectors, ``rows.npy`` their rows of X,
``bounds.npz`` the sketches (flat), ``index.faiss`` for an approximate kind, ``index.json`` what
it is and how good.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np
import threadpoolctl
from faiss.contrib.exhaustive_search import range_ground_truth
from tqdm import tqdm

from pipeline.errors import UserError
from pipeline.search.bounds import DIMS, SAMPLE, LowerBounds
from pipeline.search.embeddings import Encoder, decode, embed, pixels

logging.getLogger("faiss").setLevel(logging.WARNING)  # faiss.contrib logs one line per block


# faiss computes L2 distances with one matrix product (BLAS) from 20 queries up, and query by query
# below; a forget set is often smaller, and the product reads the vectors once instead of once per
# query: 0.20 s instead of 0.26 s for 10 queries over 30,000 images of 64x64x3 here.
faiss.cvar.distance_compute_blas_threshold = 1


BLOCK_BYTES = 128 * 2**20  # vectors per block of a scan: this many bytes of float32


# With few queries a scan does little arithmetic per vector read, and a block small enough to stay
# in cache once turned into float32 is faster: 0.37 s instead of 0.62 s for 10 queries over 30,000
# uint8 images of 64x64x3 here (blocks of 64 rows, i.e. 3 MiB, against 2,730).
FEW_QUERIES, CACHED_BLOCK_BYTES = 64, 4 * 2**20


# The largest share of the vectors a bounded search reads before it scans them all instead.
SCAN_SHARE = 0.25


APPROXIMATE = {"ivf": "IVF{nlist},Flat", "hnsw": "HNSW{hnsw_m}", "ivfpq": "IVF{nlist},PQ{pq_m}x4fs"}


@contextlib.contextmanager
def temporary_vectors(images: np.ndarray, encode: Encoder = pixels, batch_size: int = 256,
                      rows: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """uint8 images (N, C, H, W), or the ``rows`` of them, encoded (by default as pixel vectors
    (N, C*H*W)) into a temporary memory-mapped file."""
    with tempfile.TemporaryDirectory() as tmp:
        yield embed(images, encode, Path(tmp) / "vectors.npy", batch_size, desc="encode", rows=rows)


def rows_per_block(vectors: np.ndarray, block_rows: int | None = None, block_bytes: int = BLOCK_BYTES) -> int:
    """``block_rows``, or as many float32 rows of ``vectors`` as fill ``block_bytes``."""
    return block_rows or max(1, block_bytes // (4 * vectors.shape[1]))


def blocks(vectors: np.ndarray, block_rows: int | None = None, block_bytes: int = BLOCK_BYTES) -> Iterator[np.ndarray]:
    """Consecutive row blocks of stored ``vectors`` (an array or memory map), as contiguous
    float32 (:func:`pipeline.search.embeddings.decode`)."""
    block_rows = rows_per_block(vectors, block_rows, block_bytes)
    for start in range(0, len(vectors), block_rows):
        yield np.ascontiguousarray(decode(vectors[start:start + block_rows]))


def gpus() -> int:
    """GPUs faiss can use: 0 for a CPU-only faiss build or a machine without a visible GPU."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, block_rows: int | None = None,
                 bounds: LowerBounds | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``vectors`` and L2 distances (not squared) of the k nearest vectors of each
    query, nearest first: exhaustive search (faiss ``knn``, or ``knn_gpu``), block by block over
    ``vectors``, the blocks' results merged in a faiss ``ResultHeap``; with the vectors'
    ``bounds`` and fewer than ``FEW_QUERIES`` queries, :func:`bounded_search` (the same result)."""
    if k > len(vectors):
        raise UserError(f"{k} neighbours asked for among only {len(vectors)} vectors")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if bounds is not None and len(queries) < FEW_QUERIES:
        return bounded_search(vectors, queries, k, bounds, block_rows)
    return _scan(vectors, queries, k, block_rows)


def _scan(vectors: np.ndarray, queries: np.ndarray, k: int, block_rows: int | None) -> tuple[np.ndarray, np.ndarray]:
    heap, start = faiss.ResultHeap(len(queries), k), 0
    block_bytes = CACHED_BLOCK_BYTES if len(queries) < FEW_QUERIES else BLOCK_BYTES
    for block in blocks(vectors, block_rows, block_bytes):
        sq_dist, pos = _block_knn(queries, block, min(k, len(block)))
        heap.add_result(sq_dist, pos + start)
        start += len(block)
    heap.finalize()
    return heap.I, np.sqrt(np.maximum(heap.D, 0))


def bounded_search(vectors: np.ndarray, queries: np.ndarray, k: int, bounds: LowerBounds,
                   block_rows: int | None = None, first: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Exact search (as :func:`exact_search`) that reads only the vectors whose lower bounds
    (:class:`pipeline.search.bounds.LowerBounds`) cannot rule them out: filter and refine, with the
    stopping rule of optimal multi-step k-NN search (Seidl & Kriegel, SIGMOD 1998).

    1. The ``first`` x k vectors of smallest bound for each query are measured exactly, giving
       each query q a k-th distance d_q so far.
    2. Every other vector whose bound is below d_q^2 for some query q is measured too.

    A vector left out has a bound, hence a distance, above d_q, which is at least q's final k-th
    distance: the result is the exhaustive search's (ties in row order). Each step reads its
    vectors once for all queries, in row order. It runs on numpy's BLAS alone: alternating it
    with faiss's OpenMP threads costs ~9 ms a switch here, more than the search. Where the
    bounds rule out less than ``1 - SCAN_SHARE`` of the vectors (uniform noise: none), step 2 is
    the plain scan, faster than reading most rows out of order.
    """
    bound = bounds.squared(queries)
    n_first = min(first * k, len(vectors))
    seen = np.unique(np.argpartition(bound, n_first - 1, axis=1)[:, :n_first])
    sq_dist = _squared_distances(vectors, queries, seen, bounds.mean)
    kth = np.partition(sq_dist, k - 1, axis=1)[:, k - 1]
    wanted = (bound < kth[:, None]).any(axis=0)
    wanted[seen] = False
    rest = np.flatnonzero(wanted)
    if len(seen) + len(rest) > SCAN_SHARE * len(vectors):
        # numpy's BLAS threads, spinning after the products above, slow faiss's own threads by a
        # third (0.40 s against 0.28 s here); faiss parallelises the scan without them
        with threadpoolctl.threadpool_limits(1, user_api="blas"):
            return _scan(vectors, queries, k, block_rows)
    rows = np.concatenate([seen, rest])
    sq_dist = np.hstack([sq_dist, _squared_distances(vectors, queries, rest, bounds.mean)])
    order = np.lexsort((np.broadcast_to(rows, sq_dist.shape), sq_dist), axis=1)[:, :k]
    return rows[order], np.sqrt(np.maximum(np.take_along_axis(sq_dist, order, 1), 0))


def _squared_distances(vectors: np.ndarray, queries: np.ndarray, rows: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Squared L2 distances (Q, len(rows)) from each query to ``vectors[rows]`` (rows ascending),
    read in blocks: |q - c|^2 + |v - c|^2 - 2 (q - c).(v - c) in float32, about the vectors'
    mean c to keep the norms small, and the norms summed pairwise (numpy's ``sum``)."""
    out = np.empty((len(queries), len(rows)), dtype=np.float32)
    queries = queries - centre
    query_norms = np.square(queries).sum(1)[:, None]
    step = rows_per_block(vectors, None, BLOCK_BYTES // 4)
    for start in range(0, len(rows), step):
        block = decode(vectors[rows[start:start + step]]) - centre
        out[:, start:start + len(block)] = query_norms + np.square(block).sum(1) - 2 * queries @ block.T
    return out


def _block_knn(queries: np.ndarray, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if gpus():
        return faiss.knn_gpu(_gpu_resources(), queries, block, k)
    return faiss.knn(queries, block, k)


@functools.cache
def _gpu_resources():
    return faiss.StandardGpuResources()


def within(vectors: np.ndarray, queries: np.ndarray, radius: float,
           block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every (query, row) pair whose L2 distance is below ``radius``, by exhaustive range search
    of ``queries`` (float32, in memory) over ``vectors`` in blocks; the query's own row included."""
    lims, _, found = range_ground_truth(np.ascontiguousarray(queries, dtype=np.float32),
                                        blocks(vectors, block_rows), radius**2, ngpu=gpus())
    return np.repeat(np.arange(len(queries)), np.diff(lims.astype(np.int64))), found.astype(np.int64)


def range_pairs(vectors: np.ndarray, radius: float, block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j), i != j, of rows of ``vectors`` with L2 distance below ``radius``
    (both orders), by exhaustive range search in blocks of queries and of vectors."""
    firsts, seconds = [], []
    start = 0
    for queries in _progress(blocks(vectors, block_rows), vectors, block_rows, "range search"):
        query, found = within(vectors, queries, radius, block_rows)
        query += start
        keep = query != found
        firsts.append(query[keep])
        seconds.append(found[keep])
        start += len(queries)
    return np.concatenate(firsts), np.concatenate(seconds)


def _progress(vector_blocks: Iterator[np.ndarray], vectors: np.ndarray, block_rows: int | None, desc: str,
              block_bytes: int = BLOCK_BYTES):
    """A progress bar over the blocks of ``vectors`` (``blocks(vectors, block_rows, block_bytes)``)."""
    total = -(-len(vectors) // rows_per_block(vectors, block_rows, block_bytes))
    return tqdm(vector_blocks, total=total, desc=desc, unit="block", mininterval=5)


def nearest_other(vectors: np.ndarray, block_rows: int | None = None) -> np.ndarray:
    """For each row, the L2 distance to its nearest *other* row (rows must be distinct)."""
    out, start = [], 0
    for queries in _progress(blocks(vectors, block_rows), vectors, block_rows, "nearest neighbours"):
        pos, dist = exact_search(vectors, queries, 2, block_rows)
        self_first = pos[:, 0] == start + np.arange(len(queries))
        out.append(np.where(self_first, dist[:, 1], dist[:, 0]))
        start += len(queries)
    return np.concatenate(out)


def exact_distances(vectors: np.ndarray, queries: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """L2 distance from each query to the vectors at ``pos`` (shape (n_queries, k))."""
    order = np.argsort(pos, axis=None)
    gathered = np.empty((pos.size, vectors.shape[1]), dtype=np.float32)
    gathered[order] = decode(vectors[pos.ravel()[order]])  # sorted reads from a memory map
    diff = gathered.reshape(*pos.shape, -1) - queries[:, None, :].astype(np.float32)
    return np.sqrt((diff.astype(np.float64) ** 2).sum(-1))


class ApproximateIndex:
    """A faiss index of kind ``ivf``, ``hnsw`` or ``ivfpq`` over memory-mapped vectors; its
    candidates (``refine`` x K of them) are re-ranked by exact distance."""

    def __init__(self, index: faiss.Index, vectors: np.ndarray, refine: int = 4, index_factory_string: str = ""):
        self.index, self.vectors, self.refine = index, vectors, refine
        self.index_factory_string = index_factory_string

    @classmethod
    def build(cls, vectors: np.ndarray, cfg: dict, seed: int = 0) -> "ApproximateIndex":
        n, dim = vectors.shape
        settings = {"nlist": cfg.get("nlist") or max(1, min(int(4 * np.sqrt(n)), n // 39)),
                    "hnsw_m": cfg.get("hnsw_m", 32), "pq_m": cfg.get("pq_m", 16)}
        if cfg["kind"] == "ivfpq" and dim % settings["pq_m"]:
            raise UserError(f"knn.index.pq_m: {settings['pq_m']} does not divide the vectors' dimension {dim}")
        factory = APPROXIMATE[cfg["kind"]].format(**settings)
        index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
        try:
            if not index.is_trained:  # IVF: k-means on a seeded sample of at most 256 points per cell
                sample = np.sort(np.random.default_rng(seed).permutation(n)[:256 * settings["nlist"]])
                index.train(np.ascontiguousarray(decode(vectors[sample])))
            for block in blocks(vectors):
                index.add(block)
        except RuntimeError as exc:
            raise UserError(f"knn.index: faiss could not build {factory} over {n} vectors ({exc})") from exc
        space = faiss.ParameterSpace()
        if cfg["kind"] == "hnsw":
            space.set_index_parameter(index, "efSearch", cfg.get("ef_search", 128))
        else:
            space.set_index_parameter(index, "nprobe", min(cfg.get("nprobe", 16), settings["nlist"]))
        return cls(index, vectors, index_factory_string=factory)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        _, candidates = self.index.search(queries, min(self.refine * k, self.index.ntotal))
        missing = candidates < 0  # faiss pads with -1 when the visited cells hold too few vectors
        if (~missing).sum(axis=1).min() < k:
            raise UserError(f"knn.index: the {self.index.__class__.__name__} index found fewer than {k} candidates "
                            "for some queries; raise knn.index.nprobe (or ef_search)")
        candidates = np.where(missing, 0, candidates)
        dist = exact_distances(self.vectors, queries, candidates)
        dist[missing] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(candidates, order, 1), np.take_along_axis(dist, order, 1)


def recall_at_k(vectors: np.ndarray, index: ApproximateIndex, k: int, n_queries: int, seed: int = 0) -> float:
    """Mean over a seeded sample of indexed vectors of |approximate top-k & exact top-k| / k, the
    query itself left out of both lists."""
    queries_pos = np.sort(np.random.default_rng(seed).permutation(len(vectors))[:n_queries])
    queries = np.ascontiguousarray(decode(vectors[queries_pos]))
    exact, _ = exact_search(vectors, queries, k + 1)
    approx, _ = index.search(queries, k + 1)

    def without_self(pos):
        return [[p for p in row if p != q][:k] for row, q in zip(pos, queries_pos)]

    hits = [len(set(a) & set(e)) for a, e in zip(without_self(approx), without_self(exact))]
    return float(np.mean(hits) / k)


def check_params(cfg: dict, n_retain: int) -> None:
    if cfg["k"] > n_retain:
        raise UserError(f"knn.k: {cfg['k']} neighbours asked for, but the retain set has only {n_retain} images")


def lower_bounds(vectors: np.ndarray, seed: int = 0) -> LowerBounds:
    """The sketches of stored ``vectors``, their projection fitted on a seeded sample of them: ``SAMPLE``
    vectors, or as many as fill half a block if fewer, but at least m (CelebA-HQ's 196,608 numbers
    per image: 170 of them, 134 MB as float32)."""
    size = min(SAMPLE, max(DIMS, rows_per_block(vectors, block_bytes=BLOCK_BYTES // 2)))
    sample = np.sort(np.random.default_rng(seed).permutation(len(vectors))[:size])
    block_bytes = 2 * CACHED_BLOCK_BYTES
    return LowerBounds.build(decode(vectors[sample]), _progress(blocks(vectors, block_bytes=block_bytes), vectors,
                                                                None, "sketch", block_bytes))


def build_index(directory: Path, images: np.ndarray, retain: np.ndarray, cfg: dict, encode: Encoder) -> dict:
    """Write the retain set's vectors (by ``encode``), their rows and (approximate kinds) the faiss
    index into ``directory``; return the index's description."""
    start = time.time()
    vectors = embed(images, encode, directory / "vectors.npy", cfg["batch_size"], desc="encode retain set",
                    rows=retain)
    np.save(directory / "rows.npy", retain)
    kind = cfg["index"]["kind"]
    info = {"kind": kind, "space": cfg["space"], "encoder": cfg.get("encoder"), "ntotal": len(vectors),
            "dim": int(vectors.shape[1]), "gpus": gpus()}
    if kind == "flat":
        bounds = lower_bounds(vectors)
        bounds.save(directory / "bounds.npz")
        info["bound_dims"] = int(bounds.basis.shape[1])
    else:
        approx = ApproximateIndex.build(vectors, cfg["index"])
        faiss.write_index(approx.index, str(directory / "index.faiss"))
        info.update(factory=approx.index_factory_string,
                    recall_queries=min(cfg["index"].get("recall_queries", 1000), len(vectors)))
        k = min(cfg["k"], len(vectors) - 1)  # the query itself is left out
        info[f"recall_at_{k}"] = recall_at_k(vectors, approx, k, info["recall_queries"])
    info["build_seconds"] = round(time.time() - start, 3)
    (directory / "index.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def open_index(directory: str | Path) -> tuple[dict, np.ndarray, np.ndarray, ApproximateIndex | LowerBounds | None]:
    """The description, vectors (memory-mapped), rows of X and the index proper of a directory
    written by :func:`build_index`: the faiss index of an approximate kind, the lower bounds of
    a flat one (None in a flat index written before them)."""
    directory = Path(directory)
    try:
        info = json.loads((directory / "index.json").read_text())
        vectors = np.load(directory / "vectors.npy", mmap_mode="r")
        rows = np.load(directory / "rows.npy")
        if info["kind"] != "flat":
            index = ApproximateIndex(faiss.read_index(str(directory / "index.faiss")), vectors)
        else:
            index = LowerBounds.load(directory / "bounds.npz") if (directory / "bounds.npz").is_file() else None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"{directory}: not a readable neighbour index ({exc})") from exc
    return info, vectors, rows, index


def neighbours(directory: str | Path, query_images: np.ndarray, k: int, encode: Encoder,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Rows of X and distances of the k nearest indexed images of each query image (uint8),
    the queries encoded by ``encode``, the encoder the index was built with."""
    _, vectors, rows, index = open_index(directory)
    with temporary_vectors(query_images, encode, batch_size) as stored:
        queries = decode(stored)
    if isinstance(index, ApproximateIndex):
        pos, dist = index.search(queries, k)
    else:
        pos, dist = exact_search(vectors, queries, k, bounds=index)
    return rows[pos], dist
