"""pipeline.knn: exact L2 neighbours (faiss) against brute force, and the knn stage CLI."""


import faiss
import numpy as np
import pytest
import yaml

from pipeline.artifacts import load_npz, save_npz
from pipeline.knn import exact_index, flat, main, nearest


def brute_force(data: np.ndarray, queries: np.ndarray, k: int):
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - data[None, :, :]) ** 2).sum(-1))
    pos = np.argsort(d, axis=1, kind="stable")[:, :k]
    return pos, np.take_along_axis(d, pos, axis=1)


def test_nearest_matches_brute_force(rng):
    data = rng.random((200, 48), dtype=np.float32)
    queries = rng.random((5, 48), dtype=np.float32)
    pos, dist = nearest(exact_index(data), queries, 7)
    want_pos, want_dist = brute_force(data, queries, 7)
    assert pos.shape == dist.shape == (5, 7)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-5, atol=1e-5)  # L2, not squared


def test_nearest_finds_exact_copy_at_distance_zero(rng):
    data = rng.random((50, 12), dtype=np.float32)
    pos, dist = nearest(exact_index(data), data[[17, 3]].copy(), 1)
    assert pos[:, 0].tolist() == [17, 3]
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-3)


def test_flat_scales_to_unit_interval():
    images = np.array([[[[0, 255], [51, 102]]]], dtype=np.uint8)
    out = flat(images)
    assert out.dtype == np.float32 and out.shape == (1, 4) and out.flags.c_contiguous
    np.testing.assert_allclose(out[0], [0.0, 1.0, 0.2, 0.4], rtol=1e-6)


def write_inputs(tmp_path, params, rng, k):
    """20 rows of 1x4x4 images: rows 5 and 17..19 (three identical copies) form the forget set."""
    images = rng.integers(0, 256, size=(20, 1, 4, 4), dtype=np.uint8)
    images[17:] = images[17]
    images[2] = np.clip(images[17].astype(int) + 1, 0, 255)  # a retain row very close to the copies
    labels = np.full(20, 3, dtype=np.int64)
    injected = np.full(20, -1, dtype=np.int64)
    injected[17:] = 0
    save_npz(tmp_path / "train.npz", images=images, labels=labels, injected=injected)
    save_npz(tmp_path / "forget.npz", rows=np.array([5, 17, 18, 19]), group=np.array([0, 1, 1, 1]),
             distinct=np.array([5, 17]))
    params["knn"]["k"] = k
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return images


def knn_argv(tmp_path):
    return ["--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "train.npz"),
            "--forget", str(tmp_path / "forget.npz"), "--index", str(tmp_path / "retain.faiss"),
            "--out", str(tmp_path / "knn.npz"), "--png", str(tmp_path / "knn.png")]


def test_knn_cli_neighbours_are_retain_rows_sorted_by_distance(tmp_path, params, rng):
    images = write_inputs(tmp_path, params, rng, k=4)
    main(knn_argv(tmp_path))
    knn = load_npz(tmp_path / "knn.npz", ("neighbours", "distances"))
    neighbours, distances = knn["neighbours"], knn["distances"]
    assert neighbours.shape == distances.shape == (2, 4)
    assert not set(neighbours.ravel().tolist()) & {5, 17, 18, 19}
    assert np.all(np.diff(distances, axis=1) >= 0)
    assert neighbours[1, 0] == 2  # the planted near-copy, not one of the forget copies
    # independent brute force over the retain rows, in [0, 1] pixel space
    x = images.reshape(20, -1).astype(np.float64) / 255.0
    retain = np.array([r for r in range(20) if r not in {5, 17, 18, 19}])
    for q, row in enumerate([5, 17]):
        d = np.sqrt(((x[retain] - x[row]) ** 2).sum(1))
        order = np.argsort(d, kind="stable")[:4]
        np.testing.assert_array_equal(neighbours[q], retain[order])
        np.testing.assert_allclose(distances[q], d[order], rtol=1e-4, atol=1e-5)
    index = faiss.read_index(str(tmp_path / "retain.faiss"))
    assert index.ntotal == 16 and index.d == 16
    assert (tmp_path / "knn.png").is_file()


def test_knn_cli_k_larger_than_retain_set_exits_2(tmp_path, params, rng, capsys):
    write_inputs(tmp_path, params, rng, k=17)
    with pytest.raises(SystemExit) as info:
        main(knn_argv(tmp_path))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "knn.k" in err
    assert not (tmp_path / "knn.npz").exists() and not (tmp_path / "retain.faiss").exists()
