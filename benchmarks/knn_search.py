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
3. Exact search against the bandwidth limit: the same N images stored as the index stores them
   (uint8 pixels, :mod:`pipeline.search.embeddings`) and as float32 [0, 1] vectors (before), each
   a memory-mapped .npy file. One streaming pass (every stored block read into memory, nothing
   computed) against :func:`pipeline.search.neighbours.exact_search` of the forget set, with the
   file in the page cache (warm) and evicted from it first (cold, ``posix_fadvise``: read from
   disk). The ratio search / pass says how far the search is from reading its input.
4. Memory for a growing N: each N in a fresh process that encodes a uint8 image file into a
   memory-mapped embedding file (:func:`pipeline.search.embeddings.embed`) and searches it exactly,
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
from pipeline.search.neighbours import ApproximateIndex, exact_search, recall_at_k

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


def bandwidth_comparison(n: int, rounds: int) -> None:
    print(f"## Exact search against one streaming pass over the stored vectors: N = {n} images of "
          f"{'x'.join(map(str, SHAPE))}, {N_FORGET} queries, K = {K}\n")
    print("| stored as | file MiB | cache | streaming pass s | exact search s | search / pass |\n|---|---|---|---|---|---|")
    queries = decode(np.concatenate([b.reshape(len(b), -1) for b in random_images(N_FORGET, 1)]))
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images.npy"
        write_images(images, n)
        for dtype in ("uint8", "float32"):
            path = Path(tmp) / f"{dtype}.npy"
            if dtype == "uint8":
                vectors = embed(np.load(images, mmap_mode="r"), pixels, path)
            else:
                stored = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, int(np.prod(SHAPE))))
                for start, block in zip(range(0, n, 2048), random_images(n)):
                    stored[start:start + len(block)] = decode(block.reshape(len(block), -1))
                stored.flush()
                del stored
                vectors = np.load(path, mmap_mode="r")
            for cache in ("warm", "cold"):
                prepare = (lambda: evict(path)) if cache == "cold" else (lambda: None)
                t_pass = statistics.median(timed_after(prepare, lambda: streaming_pass(vectors)) for _ in range(rounds))
                t_search = statistics.median(timed_after(prepare, lambda: found.__setitem__(
                    dtype, exact_search(vectors, queries, K))) for _ in range(rounds))
                print(f"| {dtype} | {path.stat().st_size / 2**20:,.0f} | {cache} | {t_pass:.3f} | {t_search:.3f} | "
                      f"{t_search / t_pass:.1f} |")
    same = np.array_equal(found["uint8"][0], found["float32"][0])
    print(f"\nidentical neighbours from uint8 and float32 storage: {same}; largest distance difference "
          f"{np.abs(found['uint8'][1] - found['float32'][1]).max():.2e}\n")


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

    def bounded():
        exact_search(embed(images, pixels, Path(work) / "vectors.npy", batch_size=256), queries, K)

    def in_ram():
        vectors = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255
        index = faiss.IndexFlatL2(vectors.shape[1])
        index.add(vectors)
        index.search(queries, K)

    peak = peak_anon_kib(bounded if mode == "memmap" else in_ram)
    print(json.dumps({"peak_mib": round(peak / 1024), "extra_mib": round((peak - base) / 1024)}))


def memory_comparison(sizes: list[int]) -> None:
    print("## Peak anonymous memory for a growing N (64x64x3 images; float32 vectors are 48 KiB each)\n")
    print("| N | float32 vectors MiB | memmap + blocks: peak MiB (above start) | all in RAM + IndexFlatL2: peak MiB "
          "(above start) |\n|---|---|---|---|")
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
        bandwidth_comparison(args.n, args.rounds)
    if "memory" not in args.skip:
        memory_comparison(args.sizes)


if __name__ == "__main__":
    main()
