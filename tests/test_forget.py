"""pipeline.forget: choosing the forget set A, grouping identical copies, R = X \\ A."""

import numpy as np
import pytest

from pipeline.config import UserError
from pipeline.forget import group_identical, retain_rows, select_rows


@pytest.fixture
def train(rng):
    """10 rows: 7 distinct base images (labels 0,1,2,0,1,2,0), then 3 identical injected copies."""
    base = rng.integers(0, 256, size=(7, 1, 4, 4), dtype=np.uint8)
    copy = np.full((1, 1, 4, 4), 200, dtype=np.uint8)
    return {
        "images": np.concatenate([base, np.repeat(copy, 3, axis=0)]),
        "labels": np.array([0, 1, 2, 0, 1, 2, 0, -1, -1, -1], dtype=np.int64),
        "injected": np.array([-1] * 7 + [0, 0, 0], dtype=np.int64),
    }


def with_forget(params, **forget):
    params["forget"] = {"strategy": "injected", "label": None, "indices": None, **forget}
    return params


def test_injected_strategy_selects_injected_rows(params, train):
    rows = select_rows(with_forget(params, strategy="injected"), train)
    assert rows.tolist() == [7, 8, 9]


def test_label_strategy_selects_rows_with_label(params, train):
    rows = select_rows(with_forget(params, strategy="label", label=0), train)
    assert rows.tolist() == [0, 3, 6]


def test_indices_strategy_sorts_and_deduplicates(params, train):
    rows = select_rows(with_forget(params, strategy="indices", indices=[9, 3, 1, 3]), train)
    assert rows.tolist() == [1, 3, 9]


def test_indices_out_of_range_names_key(params, train):
    with pytest.raises(UserError, match="forget.indices") as info:
        select_rows(with_forget(params, strategy="indices", indices=[0, 10]), train)
    assert "10" in str(info.value)


def test_label_without_rows_is_empty_error(params, train):
    with pytest.raises(UserError, match="empty"):
        select_rows(with_forget(params, strategy="label", label=7), train)


def test_injected_without_injected_rows_is_empty_error(params, train):
    train["injected"][:] = -1
    with pytest.raises(UserError, match="empty"):
        select_rows(with_forget(params, strategy="injected"), train)


def test_selecting_every_row_is_an_error(params, train):
    with pytest.raises(UserError, match="retain set"):
        select_rows(with_forget(params, strategy="indices", indices=list(range(10))), train)
    train["labels"][:] = 4
    with pytest.raises(UserError, match="retain set"):
        select_rows(with_forget(params, strategy="label", label=4), train)


def test_group_identical_matches_brute_force(rng):
    uniques = rng.integers(0, 256, size=(5, 1, 4, 4), dtype=np.uint8)
    which = np.array([3, 0, 3, 1, 4, 4, 2, 3, 0, 1, 4, 2])
    images = uniques[which]
    group, distinct = group_identical(images)
    assert group.shape == (len(images),)
    n = len(images)
    for i in range(n):
        for j in range(n):
            same = images[i].tobytes() == images[j].tobytes()
            assert (group[i] == group[j]) == same, (i, j)
    # one representative per group, and group g's representative is in group g
    assert len(distinct) == len({im.tobytes() for im in images}) == 5
    assert sorted(group[distinct].tolist()) == list(range(5))
    for g, row in enumerate(distinct):
        assert group[row] == g
    # every row is byte-identical to the representative of its group
    for i in range(n):
        assert np.array_equal(images[i], images[distinct[group[i]]])


def test_group_identical_all_distinct_and_all_same(rng):
    images = rng.integers(0, 256, size=(6, 1, 4, 4), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(6)  # guarantee distinct
    group, distinct = group_identical(images)
    assert len(set(group.tolist())) == 6 and len(distinct) == 6
    same = np.repeat(images[:1], 4, axis=0)
    group, distinct = group_identical(same)
    assert group.tolist() == [0, 0, 0, 0] and len(distinct) == 1


def test_retain_rows_is_complement():
    forget = np.array([7, 2, 5])
    retain = retain_rows(10, forget)
    assert retain.tolist() == [0, 1, 3, 4, 6, 8, 9]
    assert set(retain.tolist()) | set(forget.tolist()) == set(range(10))
    assert not set(retain.tolist()) & set(forget.tolist())
