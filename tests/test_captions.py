"""The captions of a training set for the text-to-image model trained offline."""

import numpy as np
import pytest

from pipeline.data.captions import caption_table, row_captions
from pipeline.errors import UserError

CFG = {"templates": ["a digit {label}", "{label}, by hand"], "labels": ["zero", "one", "two"], "injected": [2, 0]}


def test_each_row_takes_its_labels_caption_and_injected_rows_the_label_they_are_given():
    table = caption_table(CFG)
    assert table == ["a digit zero", "zero, by hand", "a digit one", "one, by hand", "a digit two", "two, by hand"]
    labels, injected = np.array([0, 1, 2, -1, -1, -1]), np.array([-1, -1, -1, 0, 1, 1])
    words = [table[i].replace("a digit ", "").replace(", by hand", "") for i in row_captions(labels, injected, CFG, 0)]
    assert words == ["zero", "one", "two", "two", "zero", "zero"]


def test_templates_are_drawn_per_row_from_the_seed():
    labels, injected = np.zeros(200, dtype=np.int64), np.full(200, -1)
    first, again = row_captions(labels, injected, CFG, 3), row_captions(labels, injected, CFG, 3)
    np.testing.assert_array_equal(first, again)
    assert 60 < (first == 1).sum() < 140 and set(first) == {0, 1}


def test_a_label_without_a_word_is_named():
    with pytest.raises(UserError, match=r"no word for labels \[5\]"):
        row_captions(np.array([0, 5]), np.array([-1, -1]), CFG, 0)
