"""pipeline.search.neighbours: exact and approximate L2 neighbours (faiss) against numpy brute force,
and the knn stage CLI."""

import json

import faiss
import numpy as np
import pytest
import yaml

from pipeline.artifacts import load_npz, save_npz
from pipeline.errors import UserError
from pipeline.search import neighbours as search
from pipeline.search.bounds import LowerBounds
from pipeline.search.embeddings import decode
from pipeline.search.neighbours import (
    ApproximateIndex,
    exact_search,
    lower_bounds,
    nearest_other,
    range_pairs,
    recall_at_k,
    temporary_vectors,
)
from pipeline.stages.knn import main


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L2 distances (not squared) between every row of ``a`` and every row of ``b``, in float64."""
    diff = a[:, None, :].astype(np.float64) - b[None, :, :].astype(np.float64)
    return np.sqrt((diff**2).sum(-1))


def brute_force(data: np.ndarray, queries: np.ndarray, k: int):
    d = pairwise(queries, data)
    pos = np.argsort(d, axis=1, kind="stable")[:, :k]
    return pos, np.take_along_axis(d, pos, axis=1)


# ---------------------------------------------------------------- exact search


@pytest.mark.parametrize("block_rows", [None, 7, 1000])
@pytest.mark.parametrize("k", [1, 5, 30])
def test_exact_search_matches_brute_force(rng, block_rows, k):
    data = rng.random((30, 24), dtype=np.float32)  # 30 rows: blocks of 7 leave a short last block
    queries = rng.random((6, 24), dtype=np.float32)
    pos, dist = exact_search(data, queries, k, block_rows=block_rows)
    want_pos, want_dist = brute_force(data, queries, k)
    assert pos.shape == dist.shape == (6, k)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-5, atol=1e-5)  # L2, not squared


def test_exact_search_k_equal_to_n_returns_every_vector_once(rng):
    data = rng.random((23, 10), dtype=np.float32)
    queries = rng.random((4, 10), dtype=np.float32)
    pos, dist = exact_search(data, queries, 23, block_rows=5)
    for row in pos:
        assert sorted(row.tolist()) == list(range(23))
    assert np.all(np.isfinite(dist)) and np.all(np.diff(dist, axis=1) >= 0)
    np.testing.assert_allclose(dist, brute_force(data, queries, 23)[1], rtol=1e-5, atol=1e-5)


def test_exact_search_on_memory_map(tmp_path, rng):
    data = rng.random((40, 8), dtype=np.float32)
    np.save(tmp_path / "v.npy", data)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    queries = rng.random((3, 8), dtype=np.float32)
    pos, dist = exact_search(mapped, queries, 6, block_rows=9)
    want_pos, want_dist = brute_force(data, queries, 6)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-5, atol=1e-5)


def test_exact_search_finds_exact_copy_at_distance_zero(rng):
    data = rng.random((50, 12), dtype=np.float32)
    pos, dist = exact_search(data, data[[17, 3]].copy(), 1, block_rows=8)
    assert pos[:, 0].tolist() == [17, 3]
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-3)


def test_exact_search_k_larger_than_vectors_is_user_error(rng):
    data = rng.random((5, 4), dtype=np.float32)
    with pytest.raises(UserError, match="6"):
        exact_search(data, data[:1], 6)


def test_temporary_vectors_are_the_pixels_which_decode_to_the_unit_interval():
    images = np.array([[[[0, 255], [51, 102]]], [[[255, 0], [0, 51]]], [[[1, 2], [3, 4]]]], dtype=np.uint8)
    with temporary_vectors(images) as out:
        assert out.dtype == np.uint8 and out.shape == (3, 4)
        np.testing.assert_allclose(decode(out[:2]), [[0.0, 1.0, 0.2, 0.4], [1.0, 0.0, 0.0, 0.2]], rtol=1e-6)
    with temporary_vectors(images, rows=np.array([2, 0])) as out:
        np.testing.assert_array_equal(out, [[1, 2, 3, 4], [0, 255, 51, 102]])


def test_exact_search_over_uint8_pixels_equals_search_over_their_floats(rng):
    """The stored uint8 pixel vectors, decoded block by block, give the neighbours and distances of
    the float32 [0, 1] vectors they stand for, in blocks of any size."""
    images = rng.integers(0, 256, size=(300, 48), dtype=np.uint8)
    queries = rng.random((5, 48), dtype=np.float32)
    want_pos, want_dist = exact_search(decode(images), queries, 7)
    for block_rows in (None, 1, 64):
        pos, dist = exact_search(images, queries, 7, block_rows)
        np.testing.assert_array_equal(pos, want_pos)
        np.testing.assert_allclose(dist, want_dist, rtol=1e-5)
    x = images.astype(np.float64) / 255
    brute = np.sqrt(((x[None] - queries[:, None].astype(np.float64)) ** 2).sum(-1))
    np.testing.assert_allclose(want_dist, np.sort(brute, axis=1)[:, :7], rtol=1e-4)


# ---------------------------------------------------------------- range search and nearest other


@pytest.mark.parametrize("block_rows", [None, 7])
def test_range_pairs_matches_brute_force(rng, block_rows):
    data = rng.random((30, 6), dtype=np.float32)
    d = pairwise(data, data)
    off = np.sort(d[~np.eye(30, dtype=bool)])
    i = int(0.1 * len(off))
    while off[i + 1] - off[i] < 1e-3:  # a radius well away from every distance
        i += 1
    radius = float((off[i] + off[i + 1]) / 2)
    first, second = range_pairs(data, radius, block_rows=block_rows)
    got = list(zip(first.tolist(), second.tolist()))
    assert len(got) == len(set(got))  # no pair twice
    want = {(a, b) for a in range(30) for b in range(30) if a != b and d[a, b] < radius}
    assert set(got) == want
    assert len(want) > 30  # the test is not vacuous
    assert all((b, a) in want for a, b in want)  # both orders


def test_range_pairs_with_no_pair_in_range(rng):
    data = rng.random((12, 4), dtype=np.float32)
    first, second = range_pairs(data, 1e-4, block_rows=5)
    assert len(first) == len(second) == 0


@pytest.mark.parametrize("block_rows", [None, 7, 1])
def test_nearest_other_matches_brute_force(rng, block_rows):
    data = rng.random((30, 10), dtype=np.float32)
    d = pairwise(data, data)
    np.fill_diagonal(d, np.inf)
    got = nearest_other(data, block_rows=block_rows)
    assert got.shape == (30,)
    np.testing.assert_allclose(got, d.min(axis=1), rtol=1e-5, atol=1e-5)


def test_nearest_other_with_a_very_close_pair(rng):
    data = rng.random((20, 10), dtype=np.float32)
    data[11] = data[4] + 0.01
    d = pairwise(data, data)
    np.fill_diagonal(d, np.inf)
    got = nearest_other(data, block_rows=6)
    np.testing.assert_allclose(got, d.min(axis=1), rtol=1e-3, atol=1e-3)
    assert got[4] < 0.1 and got[11] < 0.1


# ---------------------------------------------------------------- lower bounds and bounded search


def smooth_images(rng, n: int, size: int = 16) -> np.ndarray:
    """n uint8 images (n, size*size) of a few random blobs each: the low-frequency structure the
    bounds exploit, so that they rule most rows out."""
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1)
    images = np.zeros((n, size, size))
    for _ in range(3):
        centre = rng.uniform(0, size, (n, 1, 1, 2))
        images += rng.uniform(0.2, 1, (n, 1, 1)) * np.exp(-((grid - centre) ** 2).sum(-1) / 8)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8).reshape(n, -1)


@pytest.mark.parametrize("n, dims", [(400, 8), (400, 64), (5, 64)],
                         ids=["sketch-8", "sketch-64", "fewer-rows-than-dims"])
def test_lower_bounds_never_exceed_the_true_distances(rng, n, dims):
    data = decode(np.concatenate([smooth_images(rng, n), rng.integers(0, 256, (n, 256), dtype=np.uint8)]))
    queries = decode(np.concatenate([smooth_images(rng, 7), rng.integers(0, 256, (3, 256), dtype=np.uint8)]))
    bounds = LowerBounds.build(data[:300], [data[:n], data[n:]], dims=dims)
    assert bounds.sketches.shape == (len(data), min(dims, len(data[:300])) + 1)
    got, truth = bounds.squared(queries), pairwise(queries, data) ** 2
    assert np.all(got <= truth)
    assert got.max() > 0.5 * truth.max()  # and not vacuous: the farthest pairs are bounded closely


def test_bounded_search_is_exact_and_reads_few_rows(rng, monkeypatch):
    data = smooth_images(rng, 3000)
    queries = decode(smooth_images(rng, 5))
    read = []
    measure = search._squared_distances

    def counted(vectors, queries, rows, centre):
        read.append(len(rows))
        return measure(vectors, queries, rows, centre)

    monkeypatch.setattr(search, "_squared_distances", counted)
    pos, dist = exact_search(data, queries, 10, bounds=lower_bounds(data))
    want_pos, want_dist = brute_force(decode(data), queries, 10)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-5, atol=1e-5)
    assert 20 <= sum(read) < 0.25 * len(data)  # at least the first 2K rows, far from all


def test_bounded_search_scans_what_its_bounds_cannot_prune(rng, monkeypatch):
    data = rng.integers(0, 256, (600, 256), dtype=np.uint8)  # uniform noise: every distance alike
    queries = decode(rng.integers(0, 256, (4, 256), dtype=np.uint8))
    scans = []
    scan = search._scan
    monkeypatch.setattr(search, "_scan", lambda *args: scans.append(1) or scan(*args))
    pos, dist = exact_search(data, queries, 5, bounds=lower_bounds(data))
    assert scans == [1]
    want_pos, want_dist = brute_force(decode(data), queries, 5)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-5, atol=1e-5)


def test_bounded_search_finds_copies_at_distance_zero_and_k_equal_to_n(rng):
    data = smooth_images(rng, 40)
    bounds = lower_bounds(data)
    pos, dist = exact_search(data, decode(data[[17, 3]]), 1, bounds=bounds)
    np.testing.assert_array_equal(pos[:, 0], [17, 3])
    np.testing.assert_allclose(dist, 0, atol=1e-3)
    pos, dist = exact_search(data, decode(data[:2]), 40, bounds=bounds)
    assert all(sorted(row.tolist()) == list(range(40)) for row in pos)
    # k = N: the scan (faiss), whose float32 |q|^2 + |v|^2 - 2 q.v leaves ~1e-5 of a squared zero
    np.testing.assert_allclose(dist**2, brute_force(decode(data), decode(data[:2]), 40)[1] ** 2, atol=1e-4)


def test_lower_bounds_survive_saving(tmp_path, rng):
    data = smooth_images(rng, 50)
    bounds = lower_bounds(data)
    bounds.save(tmp_path / "bounds.npz")
    loaded = LowerBounds.load(tmp_path / "bounds.npz")
    np.testing.assert_array_equal(loaded.squared(decode(data[:3])), bounds.squared(decode(data[:3])))


# ---------------------------------------------------------------- approximate indexes


@pytest.fixture(scope="module")
def clusters():
    """2,000 points of 20 well-separated Gaussian clusters (dim 16), their cluster, and 30 queries
    drawn around the cluster centres."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 10, size=(20, 16))
    label = np.repeat(np.arange(20), 100)
    data = (centres[label] + rng.normal(0, 0.5, size=(2000, 16))).astype(np.float32)
    query_label = rng.integers(0, 20, size=30)
    queries = (centres[query_label] + rng.normal(0, 0.5, size=(30, 16))).astype(np.float32)
    return data, label, queries, query_label


APPROXIMATE_CFGS = [
    {"kind": "ivf", "nlist": 8, "nprobe": 2},
    {"kind": "hnsw", "hnsw_m": 16, "ef_search": 64},
    {"kind": "ivfpq", "nlist": 8, "nprobe": 2, "pq_m": 2},
]


@pytest.mark.parametrize("cfg", APPROXIMATE_CFGS, ids=lambda c: c["kind"])
def test_approximate_index_results_are_reranked_exactly(clusters, cfg):
    data, label, queries, query_label = clusters
    index = ApproximateIndex.build(data, cfg)
    assert index.index.ntotal == 2000
    pos, dist = index.search(queries, 10)
    assert pos.shape == dist.shape == (30, 10)
    assert np.all((pos >= 0) & (pos < 2000))
    for row in pos:
        assert len(set(row.tolist())) == 10  # no row twice
    assert np.all(np.diff(dist, axis=1) >= 0)  # nearest first
    exact = np.sqrt(((data[pos].astype(np.float64) - queries[:, None, :]) ** 2).sum(-1))
    np.testing.assert_allclose(dist, exact, rtol=1e-5, atol=1e-5)
    # clusters are far apart: every neighbour lies in the query's own cluster
    assert np.all(label[pos] == query_label[:, None])


def test_ivf_visiting_every_cell_is_exact(clusters):
    data, _, queries, _ = clusters
    index = ApproximateIndex.build(data, {"kind": "ivf", "nlist": 8, "nprobe": 8})
    pos, dist = index.search(queries, 7)
    want_pos, want_dist = brute_force(data, queries, 7)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-5, atol=1e-5)


def brute_force_recall(data, found_per_query, queries_pos, k):
    """Mean over queries of |found & exact top-k| / k, the query itself left out of both."""
    d = pairwise(data[queries_pos], data)
    d[np.arange(len(queries_pos)), queries_pos] = np.inf
    exact = np.argsort(d, axis=1, kind="stable")[:, :k]
    hits = [len(set(found) & set(e.tolist())) for found, e in zip(found_per_query, exact)]
    return float(np.mean(hits)) / k


def recall_queries(n, n_queries, seed=0):
    """The query rows recall_at_k draws: a seeded permutation's first n_queries, sorted."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:n_queries])


def test_recall_is_one_when_ivf_visits_every_cell(clusters):
    data = clusters[0]
    index = ApproximateIndex.build(data, {"kind": "ivf", "nlist": 8, "nprobe": 8})
    queries_pos = recall_queries(len(data), 50)
    exact_found = []
    for q in queries_pos:
        d = pairwise(data[q:q + 1], data)[0]
        d[q] = np.inf
        exact_found.append(np.argsort(d, kind="stable")[:10].tolist())
    assert brute_force_recall(data, exact_found, queries_pos, 10) == 1.0  # the definition, sanity
    assert recall_at_k(data, index, 10, 50) == 1.0


def test_recall_of_bad_ivf_setting_matches_brute_force():
    """IVF-Flat with nprobe=1 among 40 cells on uniform data: each query sees only its own cell, so
    its approximate neighbours are the exact nearest members of that cell (candidates re-ranked)."""
    rng = np.random.default_rng(2)
    data = rng.random((2000, 16), dtype=np.float32)
    k, n_queries = 10, 60
    index = ApproximateIndex.build(data, {"kind": "ivf", "nlist": 40, "nprobe": 1})
    ivf = faiss.extract_index_ivf(index.index)
    assert ivf.nprobe == 1 and ivf.nlist == 40
    cell = np.full(len(data), -1)
    for c in range(ivf.nlist):
        ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(c), ivf.invlists.list_size(c)).copy()
        cell[ids] = c
    assert np.all(cell >= 0)
    assert np.bincount(cell).min() > k  # every cell can answer k + 1 neighbours
    queries_pos = recall_queries(len(data), n_queries)
    found = []
    for q in queries_pos:
        members = np.flatnonzero((cell == cell[q]) & (np.arange(len(data)) != q))
        d = pairwise(data[q:q + 1], data[members])[0]
        found.append(members[np.argsort(d, kind="stable")[:k]].tolist())
    want = brute_force_recall(data, found, queries_pos, k)
    assert 0 < want < 0.95
    assert recall_at_k(data, index, k, n_queries) == pytest.approx(want, abs=1e-12)


def test_ivfpq_pq_m_must_divide_dimension(clusters):
    with pytest.raises(UserError, match=r"knn\.index\.pq_m"):
        ApproximateIndex.build(clusters[0], {"kind": "ivfpq", "nlist": 8, "pq_m": 5})


# ---------------------------------------------------------------- the knn stage


def write_inputs(tmp_path, params, rng, k, **index):
    """20 rows of 1x4x4 images: rows 5 and 17..19 (three identical copies) form the forget set."""
    images = rng.integers(0, 256, size=(20, 1, 4, 4), dtype=np.uint8)
    images[17:] = images[17]
    images[2] = np.clip(images[17].astype(int) + 1, 0, 255)  # a retain row very close to the copies
    labels = np.full(20, 3, dtype=np.int64)
    injected = np.full(20, -1, dtype=np.int64)
    injected[17:] = 0
    names = np.array([f"img-{i}" for i in range(17)] + ["tshirt"] * 3)
    save_npz(tmp_path / "train.npz", images=images, labels=labels, injected=injected, names=names)
    save_npz(tmp_path / "forget.npz", rows=np.array([5, 17, 18, 19]), group=np.array([0, 1, 1, 1]),
             distinct=np.array([5, 17]), request=np.zeros(2))
    params["knn"]["k"] = k
    params["knn"]["index"] = {"kind": "flat", **index}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return images


RETAIN = np.array([r for r in range(20) if r not in {5, 17, 18, 19}])


def knn_argv(tmp_path):
    return ["--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "train.npz"),
            "--forget", str(tmp_path / "forget.npz"), "--index", str(tmp_path / "index"),
            "--out", str(tmp_path / "knn.npz"), "--png", str(tmp_path / "knn.png")]


def check_neighbours(tmp_path, images, k):
    knn = load_npz(tmp_path / "knn.npz", ("neighbours", "distances"))
    neighbours, distances = knn["neighbours"], knn["distances"]
    assert neighbours.shape == distances.shape == (2, k)
    assert not set(neighbours.ravel().tolist()) & {5, 17, 18, 19}
    assert np.all(np.diff(distances, axis=1) >= 0)
    assert neighbours[1, 0] == 2  # the planted near-copy, not one of the forget copies
    # independent brute force over the retain rows, in [0, 1] pixel space
    x = images.reshape(20, -1).astype(np.float64) / 255.0
    for q, row in enumerate([5, 17]):
        d = np.sqrt(((x[RETAIN] - x[row]) ** 2).sum(1))
        order = np.argsort(d, kind="stable")[:k]
        np.testing.assert_array_equal(neighbours[q], RETAIN[order])
        np.testing.assert_allclose(distances[q], d[order], rtol=1e-4, atol=1e-5)


def test_knn_cli_neighbours_are_retain_rows_sorted_by_distance(tmp_path, params, rng):
    images = write_inputs(tmp_path, params, rng, k=4)
    main(knn_argv(tmp_path))
    check_neighbours(tmp_path, images, 4)
    assert (tmp_path / "knn.png").is_file()


def test_knn_cli_index_directory(tmp_path, params, rng):
    images = write_inputs(tmp_path, params, rng, k=4)
    main(knn_argv(tmp_path))
    index = tmp_path / "index"
    assert index.is_dir()
    info = json.loads((index / "index.json").read_text())
    assert info["kind"] == "flat" and info["ntotal"] == 16 and info["dim"] == 16
    vectors = np.load(index / "vectors.npy")
    assert vectors.dtype == np.uint8 and vectors.shape == (16, 16)  # pixels stored exactly
    np.testing.assert_array_equal(vectors, images[RETAIN].reshape(16, -1))
    np.testing.assert_array_equal(np.load(index / "rows.npy"), RETAIN)
    assert not (index / "index.faiss").exists()
    assert LowerBounds.load(index / "bounds.npz").sketches.shape == (16, info["bound_dims"] + 1)


def test_knn_cli_reads_a_flat_index_written_before_its_bounds(tmp_path, params, rng):
    images = write_inputs(tmp_path, params, rng, k=4)
    main(knn_argv(tmp_path))
    (tmp_path / "index" / "bounds.npz").unlink()
    search.neighbours(tmp_path / "index", images[[5]], 4, search.pixels)  # the plain scan, no error


def test_knn_cli_hnsw_index_records_recall(tmp_path, params, rng):
    images = write_inputs(tmp_path, params, rng, k=4, kind="hnsw")
    main(knn_argv(tmp_path))
    index = tmp_path / "index"
    info = json.loads((index / "index.json").read_text())
    assert info["kind"] == "hnsw" and info["ntotal"] == 16 and info["dim"] == 16
    assert 0.0 <= info["recall_at_4"] <= 1.0
    assert (index / "index.faiss").is_file()
    assert faiss.read_index(str(index / "index.faiss")).ntotal == 16
    check_neighbours(tmp_path, images, 4)  # 16 vectors: every one is a candidate, re-ranked exactly


def test_knn_cli_k_larger_than_retain_set_exits_2(tmp_path, params, rng, capsys):
    write_inputs(tmp_path, params, rng, k=17)
    with pytest.raises(SystemExit) as info:
        main(knn_argv(tmp_path))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "knn.k" in err[0]
    assert not (tmp_path / "knn.npz").exists() and not (tmp_path / "index").exists()
    assert not (tmp_path / "knn.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forget.npz", "params.yaml", "train.npz"]


def test_knn_cli_unknown_index_kind_names_key(tmp_path, params, rng, capsys):
    write_inputs(tmp_path, params, rng, k=4, kind="annoy")
    with pytest.raises(SystemExit) as info:
        main(knn_argv(tmp_path))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "knn.index.kind" in err and "annoy" in err
    assert not (tmp_path / "index").exists()
