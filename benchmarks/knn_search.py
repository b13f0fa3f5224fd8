"""Neighbour search at scale: faiss (as pipeline.search.neighbours runs it) against scikit-learn, side by side.

1. Exact search: ``NearestNeighbors(algorithm="brute")`` fit + kneighbors (what the ReTrack
   reference code runs) against :func:`pipeline.search.neighbours.exact_search` (faiss, blocks over the
   vectors), K = 10, N random images of 64x64x3 in [0, 1], a forget set of 10 queries. Both
   must return the same neighbours; the ratio is sklearn time / faiss time (median of rounds).
2. Approximate indexes (:class:`pipeline.search.neighbours.ApproximateIndex`) at the same N: build time,
   query time for the forget set, and recall@10 against exact search on a sample of the data.
   Uniform random images have no structure for an index to exploit (every distance is within a
   few per cent of every other), so the same is measured on N real images too: MNIST digits
   (784 dimensions) from ``data/raw/mnist.npz`` (``make setup`` fetches it), when present.
3. Exact search against the bandwidth limit: N random images and N MNIST digits upscaled to
   64x64x3 with seeded colours (real structure), stored as the index stores them (uint8 pixels,
   :mod:`pipeline.search.embeddings`) and as float32 [0, 1] vectors (before), each a
   memory-mapped .npy file. One streaming pass (every stored block read into memory, nothing
   computed) against :func:`pipeline.search.neighbours.exact_search` of the forget set, as a scan
   and with the index's lower bounds (:func:`pipeline.search.neighbours.bounded_search`), with the
   file in the page cache (warm) and evicted from it first (cold, ``posix_fadvise``: read from
   disk). The ratio search / pass says how far the search is from reading its input.
4. Memory for a growing N: each N in a fresh process that encodes a uint8 image file into a
   memory-mapped embedding file (:func:`pipeline.search.embeddings.embed`), sketches it and searches it exactly,
   against one that loads every vector into RAM and builds an ``IndexFlatL2``. Peak anonymous
   memory (RssAnon, sampled every 2 ms: what cannot be paged out; mapped file pages are not
   counted since the kernel can drop them) shows that the first stays bounded by one block.

    pip install -e '.[bench]'
    python benchmarks/knn_search.py [--n 30000] [--rounds 3] [--sizes 2500 5000 10000 20000 30000]
                                    [--skip exact approximate bandwidth memory]
                                    [--mnist data/raw/mnist.npz]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import faiss
import numpy as np

from pipeline.search.embeddings import decode, embed, pixels
from pipeline.search.neighbours import ApproximateIndex, exact_search, lower_bounds, recall_at_k

SHAPE = (3, 64, 64)
K, N_FORGET = 10, 10
APPROXIMATE = [{"kind": "ivf", "nprobe": 16}, {"kind": "hnsw", "hnsw_m": 32, "ef_search": 128},
               {"kind": "ivfpq", "nprobe": 16}]


def pq_m_for(dim: int) -> int:
    """Sub-vectors of at most 16 dimensions each."""
    return next(m for m in range(1, dim + 1) if dim % m == 0 and dim // m <= 16)


def random_images(n: int, seed: int = 0, chunk: int = 2048):
    """n seeded random uint8 images (n, 3, 64, 64), generated in chunks."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        yield rng.integers(0, 256, size=(min(chunk, n - start), *SHAPE), dtype=np.uint8)


def write_images(path: Path, n: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, *SHAPE))
    start = 0
    for block in random_images(n):
        out[start:start + len(block)] = block
        start += len(block)
    out.flush()


def timed(fn, rounds: int):
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def exact_comparison(n: int, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import NearestNeighbors

    vectors = np.concatenate([b.reshape(len(b), -1).astype(np.float32) / 255 for b in random_images(n)])
    queries = np.concatenate([b.reshape(len(b), -1).astype(np.float32) / 255 for b in random_images(N_FORGET, 1)])
    t_sk, (_, sk_pos) = timed(lambda: NearestNeighbors(n_neighbors=K, algorithm="brute").fit(vectors)
                              .kneighbors(queries), rounds)
    t_fa, (fa_pos, _) = timed(lambda: exact_search(vectors, queries, K), rounds)
    same = bool(np.array_equal(sk_pos, fa_pos))
    print(f"## Exact search: N = {n} images of {'x'.join(map(str, SHAPE))}, {N_FORGET} queries, K = {K}\n")
    print("| search | seconds (median of %d) | ratio to faiss |\n|---|---|---|" % rounds)
    print(f"| scikit-learn NearestNeighbors brute (fit + kneighbors) | {t_sk:.3f} | {t_sk / t_fa:.1f} |")
    print(f"| faiss exact (pipeline.search.neighbours.exact_search) | {t_fa:.3f} | 1.0 |")
    print(f"\nidentical neighbours (same rows, same order): {same}\n")
    return vectors, queries


def approximate_comparison(vectors: np.ndarray, queries: np.ndarray, rounds: int, recall_queries: int,
                           what: str) -> None:
    t_exact, _ = timed(lambda: exact_search(vectors, queries, K), rounds)
    print(f"## Approximate indexes, N = {len(vectors)} {what} (recall@{K} on {recall_queries} of them as queries)\n")
    print("| index | build s | search s (10 queries) | recall@10 |\n|---|---|---|---|")
    print(f"| flat (exact) | 0 | {t_exact:.3f} | 1.000 |")
    for cfg in APPROXIMATE:
        start = time.perf_counter()
        index = ApproximateIndex.build(vectors, {**cfg, "pq_m": pq_m_for(vectors.shape[1])})
        build = time.perf_counter() - start
        t_search, _ = timed(lambda: index.search(queries, K), rounds)
        recall = recall_at_k(vectors, index, K, recall_queries)
        print(f"| {index.index_factory_string} | {build:.1f} | {t_search:.4f} | {recall:.3f} |")
    print()


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache, so that the next read comes from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def streaming_pass(vectors: np.ndarray, block_bytes: int = 64 * 2**20) -> None:
    """Read every stored row into memory, block by block, computing nothing."""
    rows = max(1, block_bytes // vectors[0].nbytes)
    for start in range(0, len(vectors), rows):
        np.array(vectors[start:start + rows])


def digit_images(mnist: Path, start: int, stop: int, seed: int = 0, chunk: int = 2048):
    """MNIST training digits start..stop as 3x64x64 uint8 images (bilinear upscaling), each with a
    seeded colour of digit and background: images with the structure of real ones, at the bandwidth
    table's shape."""
    import torch
    import torch.nn.functional as F

    digits = np.load(mnist)["train_images"]
    rng = np.random.default_rng(seed)
    for first in range(start, stop, chunk):
        grey = torch.from_numpy(digits[first:min(first + chunk, stop)]).float()[:, None] / 255
        grey = F.interpolate(grey, size=SHAPE[1:], mode="bilinear")
        ink = torch.from_numpy(rng.uniform(0.2, 1, (len(grey), 3, 1, 1))).float()
        paper = torch.from_numpy(rng.uniform(0, 0.5, (len(grey), 3, 1, 1))).float()
        yield ((paper * (1 - grey) + ink * grey).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def bandwidth_comparison(n: int, rounds: int, mnist: Path) -> None:
    print(f"## Exact search against one streaming pass over the stored vectors: N = {n} images of "
          f"{'x'.join(map(str, SHAPE))}, {N_FORGET} queries, K = {K}\n")
    print("Scan: `exact_search` over every block. Bounded: the same with the index's lower bounds "
          "(`bounded_search`, what the knn stage runs); it reads the rows the bounds cannot rule out, "
          "at least those whose bound is below a query's K-th distance (\"must read\").\n")
    print("| images | stored as | file MiB | sketches built s | cache | streaming pass s | scan s | bounded s | "
          "scan / pass | bounded / pass | must read |\n|---|---|---|---|---|---|---|---|---|---|---|")
    sources = {"random": (lambda: random_images(n), next(random_images(N_FORGET, 1)))}
    if mnist.is_file():  # the queries: the last digits, never among the n
        sources["MNIST digits, coloured"] = (lambda: digit_images(mnist, 0, n),
                                             next(digit_images(mnist, 60000 - N_FORGET, 60000, seed=1)))
    with tempfile.TemporaryDirectory() as tmp:
        for name, (images, queries) in sources.items():
            queries, found = decode(queries.reshape(N_FORGET, -1)), {}
            for dtype in ("uint8", "float32"):
                path = Path(tmp) / f"{dtype}.npy"
                bandwidth_rows(name, path, store(path, images(), n, np.dtype(dtype)), queries, rounds, found)
            pos = {key: value[0] for key, value in found.items()}
            print(f"\n{name}: the same neighbours from every row above: "
                  f"{all(np.array_equal(pos['uint8'], p) for p in pos.values())}; largest distance difference "
                  f"{max(np.abs(found['uint8'][1] - d).max() for _, d in found.values()):.1e}\n")


def bandwidth_rows(name: str, path: Path, vectors: np.ndarray, queries: np.ndarray, rounds: int,
                   found: dict) -> None:
    """The table's rows (warm and cold cache) for the vectors stored at ``path``; each search's
    result goes into ``found``."""
    dtype = str(vectors.dtype)
    t_build, bounds = timed(lambda: lower_bounds(vectors), 1)
    for cache in ("warm", "cold"):
        prepare = (lambda: evict(path)) if cache == "cold" else (lambda: None)

        def median(fn):
            return statistics.median(timed_after(prepare, fn) for _ in range(rounds))

        t_pass = median(lambda: streaming_pass(vectors))
        t_scan = median(lambda: found.__setitem__(dtype, exact_search(vectors, queries, K)))
        t_bounded = median(lambda: found.__setitem__(f"{dtype} bounded",
                                                     exact_search(vectors, queries, K, bounds=bounds)))
        must = (bounds.squared(queries) < found[dtype][1][:, -1:] ** 2).any(0).mean()
        print(f"| {name} | {dtype} | {path.stat().st_size / 2**20:,.0f} | {t_build:.1f} | {cache} | {t_pass:.3f} | "
              f"{t_scan:.3f} | {t_bounded:.3f} | {t_scan / t_pass:.1f} | {t_bounded / t_pass:.2f} | {must:.1%} |")


def store(path: Path, images, n: int, dtype: np.dtype) -> np.ndarray:
    """Images (an iterator of uint8 blocks) stored as the index stores them, memory-mapped:
    uint8 pixels, or (as before December 2026) float32 pixels in [0, 1]."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n, int(np.prod(SHAPE))))
    start = 0
    for block in images:
        flat = block.reshape(len(block), -1)
        out[start:start + len(block)] = flat if dtype == np.uint8 else decode(flat)
        start += len(block)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def timed_after(prepare, fn) -> float:
    """Seconds of fn(), after prepare() (not timed)."""
    prepare()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_anon_kib(fn) -> int:
    """Run fn while sampling this process's RssAnon; return the peak in KiB."""
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return peak[0]


def child(mode: str, images_path: str, work: str) -> None:
    """One memory measurement (runs in its own process)."""
    images = np.load(images_path, mmap_mode="r")
    queries = np.asarray(images[:N_FORGET], dtype=np.float32).reshape(N_FORGET, -1) / 255
    base = peak_anon_kib(lambda: None)

    def bounded():  # as the knn stage does: encode, sketch, search
        vectors = embed(images, pixels, Path(work) / "vectors.npy", batch_size=256)
        exact_search(vectors, queries, K, bounds=lower_bounds(vectors))

    def in_ram():
        vectors = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255
        index = faiss.IndexFlatL2(vectors.shape[1])
        index.add(vectors)
        index.search(queries, K)

    peak = peak_anon_kib(bounded if mode == "memmap" else in_ram)
    print(json.dumps({"peak_mib": round(peak / 1024), "extra_mib": round((peak - base) / 1024)}))


def memory_comparison(sizes: list[int]) -> None:
    print("## Peak anonymous memory for a growing N (64x64x3 images; float32 vectors are 48 KiB each)\n")
    print("| N | float32 vectors MiB | memmap + blocks + sketches: peak MiB (above start) | "
          "all in RAM + IndexFlatL2: peak MiB (above start) |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            images = Path(tmp) / f"images-{n}.npy"
            write_images(images, n)
            row = []
            for mode in ("memmap", "ram"):
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(images), tmp],
                                     capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                row.append(f"{result['peak_mib']} (+{result['extra_mib']})")
            images.unlink()
            print(f"| {n} | {n * np.prod(SHAPE) * 4 / 2**20:.0f} | {row[0]} | {row[1]} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--recall-queries", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000, 20000, 30000])
    parser.add_argument("--mnist", type=Path, default=Path("data/raw/mnist.npz"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["exact", "approximate", "bandwidth", "memory"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, GPUs visible to faiss: "
          f"{faiss.get_num_gpus() if hasattr(faiss, 'StandardGpuResources') else 0}\n")
    if "exact" not in args.skip or "approximate" not in args.skip:
        vectors, queries = exact_comparison(args.n, args.rounds)
        if "approximate" not in args.skip:
            approximate_comparison(vectors, queries, args.rounds, args.recall_queries, "random images 3x64x64")
        del vectors
    if "approximate" not in args.skip and args.mnist.is_file():
        digits = np.load(args.mnist)["train_images"].reshape(60000, -1).astype(np.float32) / 255
        approximate_comparison(digits[:args.n], digits[-N_FORGET:], args.rounds, args.recall_queries, "MNIST digits")
    if "bandwidth" not in args.skip:
        bandwidth_comparison(args.n, args.rounds, args.mnist)
    if "memory" not in args.skip:
        memory_comparison(args.sizes)


if __name__ == "__main__":
    main()
