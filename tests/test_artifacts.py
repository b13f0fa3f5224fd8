"""pipeline.artifacts (atomic writes, checked loads) and pipeline.diffusion.images.grid."""

import os

import numpy as np
import pytest

from pipeline.artifacts import atomic_path, load_npz, save_npz, save_text
from pipeline.diffusion.images import grid
from pipeline.errors import UserError


class Boom(Exception):
    pass


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_path_success_writes_the_file(tmp_path):
    final = tmp_path / "out.txt"
    with atomic_path(final) as tmp:
        assert tmp != final and tmp.parent == final.parent
        tmp.write_text("hello")
        assert not final.exists()
    assert final.read_text() == "hello"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_path_failure_leaves_nothing(tmp_path):
    final = tmp_path / "out.txt"
    with pytest.raises(Boom):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise Boom
    assert not final.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_path_failure_keeps_existing_file(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(final) as tmp:
            tmp.write_text("new")
            raise Boom
    assert final.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_path_creates_missing_parent(tmp_path):
    final = tmp_path / "a" / "b" / "out.txt"
    save_text(final, "x")
    assert final.read_text() == "x"


def test_atomic_directory_replaces_existing_directory(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "stale.bin").write_text("stale")
    with atomic_path(final, directory=True) as tmp:
        assert tmp.is_dir()
        (tmp / "weights.bin").write_text("fresh")
    assert sorted(os.listdir(final)) == ["weights.bin"]
    assert (final / "weights.bin").read_text() == "fresh"
    assert os.listdir(tmp_path) == ["model"]


def test_atomic_directory_failure_keeps_existing_directory(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.bin").write_text("old")
    with pytest.raises(Boom):
        with atomic_path(final, directory=True) as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "w.bin").write_text("partial")
            raise Boom
    assert os.listdir(final) == ["old.bin"]
    assert os.listdir(tmp_path) == ["model"]


def test_written_files_respect_umask(tmp_path, umask_022):
    save_npz(tmp_path / "a.npz", x=np.zeros(2))
    mode = (tmp_path / "a.npz").stat().st_mode & 0o777
    assert mode == 0o644
    with atomic_path(tmp_path / "d", directory=True) as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_save_and_load_npz_roundtrip(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    b = np.array([-1, 0, 1], dtype=np.int64)
    save_npz(tmp_path / "x.npz", a=a, b=b)
    out = load_npz(tmp_path / "x.npz", ("a", "b"))
    assert out["a"].dtype == np.uint8 and np.array_equal(out["a"], a)
    assert np.array_equal(out["b"], b)


def test_load_npz_missing_file_names_path(tmp_path):
    path = tmp_path / "missing.npz"
    with pytest.raises(UserError, match="missing.npz"):
        load_npz(path, ("a",))


def test_load_npz_garbage_file_names_path(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(bytes(range(256)) * 3)
    with pytest.raises(UserError) as info:
        load_npz(path, ("a",))
    assert str(path) in str(info.value)


def test_load_npz_truncated_file_names_path(tmp_path):
    path = tmp_path / "trunc.npz"
    save_npz(path, a=np.arange(10000, dtype=np.int64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as info:
        load_npz(path, ("a",))
    assert str(path) in str(info.value)


def test_load_npz_missing_key_names_path_and_key(tmp_path):
    path = tmp_path / "x.npz"
    save_npz(path, a=np.zeros(2))
    with pytest.raises(UserError) as info:
        load_npz(path, ("a", "rows"))
    assert str(path) in str(info.value) and "rows" in str(info.value)


def test_load_npz_on_npy_content_names_path(tmp_path):
    path = tmp_path / "x.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))  # a plain .npy under an .npz name
    with pytest.raises(UserError) as info:
        load_npz(path, ("a",))
    assert str(path) in str(info.value)


def test_grid_shape_and_placement():
    images = np.stack([np.full((1, 2, 3), i / 10, dtype=np.float32) for i in range(5)])
    images[3, 0] = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=np.float32)
    out = grid(images, ncols=2, pad=1, pad_value=0.5)
    assert out.shape == (3 * 3 + 1, 2 * 4 + 1, 1)
    # image 3 is row 1, column 1: top-left corner at y = 1 + 1*3 = 4, x = 1 + 1*4 = 5
    np.testing.assert_array_equal(out[4:6, 5:8, 0], images[3, 0])
    np.testing.assert_array_equal(out[1:3, 1:4, 0], np.zeros((2, 3)))  # image 0
    np.testing.assert_array_equal(out[7:9, 1:4, 0], np.full((2, 3), 0.4, dtype=np.float32))  # image 4
    # padding rows/columns and the empty sixth cell keep the pad value
    assert np.all(out[0] == 0.5) and np.all(out[:, 0] == 0.5)
    assert np.all(out[3] == 0.5) and np.all(out[:, 4] == 0.5)
    assert np.all(out[7:9, 5:8] == 0.5)


def test_grid_default_is_square_ish():
    out = grid(np.zeros((4, 3, 2, 2), dtype=np.float32), pad=0)
    assert out.shape == (4, 4, 3)


def test_streamed_array_is_written_block_by_block_and_memory_mapped_back(tmp_path):
    """save_npz writes a Streamed array as its blocks come (never whole), in np.savez's format;
    load_npz memory-maps the members asked for and reads the others."""
    from pipeline.artifacts import Streamed

    images = np.arange(7 * 2 * 3, dtype=np.uint8).reshape(7, 2, 3)
    served = []

    def blocks():
        for start in range(0, 7, 3):
            served.append(start)
            yield images[start:start + 3]

    save_npz(tmp_path / "a.npz", images=Streamed(images.shape, np.uint8, blocks), labels=np.arange(7))
    assert served == [0, 3, 6]
    with np.load(tmp_path / "a.npz") as plain:  # numpy reads it as its own
        np.testing.assert_array_equal(plain["images"], images)
    loaded = load_npz(tmp_path / "a.npz", ("images", "labels"), mapped=("images",))
    assert isinstance(loaded["images"], np.memmap) and not isinstance(loaded["labels"], np.memmap)
    assert not loaded["images"].flags.writeable
    np.testing.assert_array_equal(loaded["images"], images)
    np.testing.assert_array_equal(loaded["images"][[5, 1]], images[[5, 1]])
    np.testing.assert_array_equal(np.asarray(Streamed(images.shape, np.uint8, blocks)), images)


def test_streamed_array_of_the_wrong_length_is_not_written(tmp_path):
    from pipeline.artifacts import Streamed

    with pytest.raises(ValueError, match="4 rows"):
        save_npz(tmp_path / "a.npz", x=Streamed((5, 2), np.uint8, lambda: iter([np.zeros((4, 2), np.uint8)])))
    assert not (tmp_path / "a.npz").exists()


def test_load_npz_maps_only_what_it_can(tmp_path):
    """A compressed member, or an empty one, is read whole instead of mapped."""
    np.savez_compressed(tmp_path / "c.npz", images=np.ones((3, 2), np.uint8), empty=np.zeros((0, 4)))
    loaded = load_npz(tmp_path / "c.npz", ("images", "empty"), mapped=("images", "empty"))
    np.testing.assert_array_equal(loaded["images"], np.ones((3, 2)))
    assert loaded["empty"].shape == (0, 4)
