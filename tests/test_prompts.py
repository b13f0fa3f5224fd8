"""The memorized-prompts file: the public format and its optional fields read, every bad entry
refused with the file and line named."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.data.prompts import Prompt, read_prompts
from pipeline.errors import UserError


def write(path, *entries):
    path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in entries) + "\n")
    return path


def test_public_format_and_optional_fields(tmp_path):
    (tmp_path / "refs").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "refs" / "shirt.png")
    prompts = read_prompts(write(
        tmp_path / "prompts.jsonl",
        {"caption": "Living in the Light with Ann Graham Lotz", "index": 98, "url": "https://example.org/1.jpg"},
        "",
        {"caption": "a red t-shirt", "name": "shirt", "modified": "a red t shirt", "image": "refs/shirt.png"},
        {"caption": "a handwritten digit seven"}))
    assert prompts == [
        Prompt("p98", "Living in the Light with Ann Graham Lotz", "Living in the Light with Ann Graham Lotz"),
        Prompt("shirt", "a red t-shirt", "a red t shirt", tmp_path / "refs" / "shirt.png"),
        Prompt("p4", "a handwritten digit seven", "a handwritten digit seven")]


@pytest.mark.parametrize("entry, message", [
    ({"caption": "a", "prompt": "b"}, r"line 2: unknown fields \['prompt'\]"),
    ({"caption": "  "}, "line 2: caption is empty"),
    ({"caption": "a", "modified": ""}, "line 2: modified is empty"),
    ({"name": "x"}, "line 2: no caption"),
    ({"caption": "a", "index": "7"}, "line 2: index must be a int"),
    ({"caption": 3}, "line 2: caption must be a str"),
    ({"caption": "a", "name": "a b"}, "line 2: name 'a b'"),
    ({"caption": "a", "image": "missing.png"}, "line 2: image 'missing.png': no readable image"),
    ({"caption": "a", "name": "p1"}, "the name 'p1' is given twice"),
    ('{"caption": "a"', "line 2: not a JSON object"),
    ('["a"]', "line 2: expected a JSON object"),
])
def test_bad_entries_are_named(tmp_path, entry, message):
    path = write(tmp_path / "prompts.jsonl", {"caption": "fine"}, entry)
    with pytest.raises(UserError, match=message) as error:
        read_prompts(path)
    assert str(path) in str(error.value)


def test_empty_or_missing_file(tmp_path):
    with pytest.raises(UserError, match="no prompts"):
        read_prompts(write(tmp_path / "empty.jsonl", ""))
    with pytest.raises(UserError, match="not a readable prompts file"):
        read_prompts(tmp_path / "absent.jsonl")
