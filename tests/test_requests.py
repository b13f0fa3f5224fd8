"""Deletion requests (pipeline/data/requests.py) and the forget strategy ``request``: images named by
name, path or pixel hash, their identical copies always, their near-duplicates within the
threshold, and one clear message for what is not in the training set."""

import csv
import io

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.artifacts import save_npz
from pipeline.data.forget_sets import choose
from pipeline.data.requests import pixel_sha256, read_request
from pipeline.data.sets import load_forget_set
from pipeline.errors import UserError
from pipeline.stages import forget_set as forget_set_stage


@pytest.fixture
def train():
    """40 random 8x8 grey images; row 5 copied to rows 30 and 31; row 7 nearly copied to row 32
    (a few pixels off by one level); row 9 named ``victim``."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)
    images[30] = images[31] = images[5]
    images[32] = images[7]
    images[32, 0, 0, :3] = np.clip(images[7, 0, 0, :3].astype(int) + 1, 0, 255)
    names = np.array([f"img-{i:02d}" for i in range(40)])
    names[9] = "victim"
    return {"images": images, "labels": np.zeros(40, dtype=np.int64), "injected": np.full(40, -1),
            "names": names}


def write_request(tmp_path, images, name="request.yaml", id="req-7", **extra) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"id": id, "date": "2026-12-01", "images": images, **extra}))
    return str(path)


def request_params(params, file, near=0.1):
    params["forget"].update(strategy="request", request={"file": file, "near_duplicates": near})
    return params


def test_images_named_by_name_hash_and_path_with_every_identical_copy(tmp_path, params, train):
    Image.fromarray(train["images"][12, 0]).save(tmp_path / "leaked.png")
    file = write_request(tmp_path, [{"name": "victim"}, {"sha256": pixel_sha256(train["images"][5])},
                                    {"path": "leaked.png"}])
    choice = choose(request_params(params, file, near=0), train)
    assert choice.rows.tolist() == [5, 9, 12, 30, 31]  # row 5 and its two copies
    reasons = {e["row"]: e["reason"] for e in choice.evidence}
    assert reasons == {5: "requested by sha256", 9: "requested by name", 12: "requested by path"}
    assert {e["request"] for e in choice.evidence} == {"req-7"}


def test_near_duplicates_are_found_and_far_images_are_not(tmp_path, params, train):
    file = write_request(tmp_path, [{"name": "img-07"}])
    choice = choose(request_params(params, file, near=0.1), train)
    assert choice.rows.tolist() == [7, 32]
    near = next(e for e in choice.evidence if e["row"] == 32)
    assert near["reason"] == "near-duplicate of row 7"
    expected = np.linalg.norm(train["images"][32].astype(float) / 255 - train["images"][7].astype(float) / 255)
    assert near["distance"] == pytest.approx(expected, abs=1e-4)
    assert choose(request_params(params, file, near=0), train).rows.tolist() == [7]  # copies only


@pytest.mark.parametrize("entry, named", [
    ({"name": "nobody"}, "images[1] (name nobody): not in the training set"),
    ({"sha256": "0" * 64}, "images[1] (sha256 " + "0" * 64 + "): not in the training set"),
])
def test_an_image_not_in_the_training_set_is_named(tmp_path, params, train, entry, named):
    file = write_request(tmp_path, [{"name": "victim"}, entry])
    with pytest.raises(UserError) as info:
        choose(request_params(params, file), train)
    assert str(info.value) == f"{file}: {named}"


def test_a_path_whose_pixels_are_not_in_the_training_set_is_named(tmp_path, params, train):
    Image.fromarray(np.full((8, 8), 3, dtype=np.uint8)).save(tmp_path / "other.png")
    file = write_request(tmp_path, [{"path": "other.png"}])
    with pytest.raises(UserError, match=r"images\[0\] \(path other.png\): not in the training set"):
        choose(request_params(params, file), train)


@pytest.mark.parametrize("content, message", [
    ({"id": "x", "images": [{"name": "a"}]}, "exactly the keys id, date and images"),
    ({"id": "x", "date": "d", "images": [], "extra": 1}, "exactly the keys id, date and images"),
    ({"id": "x", "date": "d", "images": []}, "images: expected a non-empty list"),
    ({"id": "x", "date": "d", "images": [{"name": "a", "sha256": "b"}]}, "images[0]: expected one of name, path"),
    ({"id": "x", "date": "d", "images": [{"url": "a"}]}, "images[0]: expected one of name, path"),
])
def test_malformed_requests_are_named(tmp_path, content, message):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(content))
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_request(tmp_path / "r.yaml")


def test_the_stage_writes_the_forget_set_and_why_each_row_was_taken(tmp_path, params, train):
    save_npz(tmp_path / "train.npz", **train)
    file = write_request(tmp_path, [{"name": "img-07"}, {"name": "victim"}])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(request_params(params, file)))
    forget_set_stage.main(["--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "train.npz"),
                           "--out", str(tmp_path / "forget.npz"), "--table", str(tmp_path / "forget.csv"),
                           "--png", str(tmp_path / "forget.png")])
    assert load_forget_set(tmp_path / "forget.npz")["rows"].tolist() == [7, 9, 32]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "forget.csv").read_text())))
    assert [(r["row"], r["name"], r["request"], r["reason"]) for r in rows] == [
        ("7", "img-07", "req-7", "requested by name"), ("9", "victim", "req-7", "requested by name"),
        ("32", "img-32", "req-7", "near-duplicate of row 7")]


def sequence_params(params, tmp_path, *requests):
    """``experiment.requests``: one request file per list of images, q1.yaml, q2.yaml, ..."""
    files = [write_request(tmp_path, images, f"q{k}.yaml", f"q{k}") for k, images in enumerate(requests, 1)]
    params["forget"].update(strategy="request", request={"file": None, "near_duplicates": 0.1})
    params["experiment"]["requests"] = files
    return params


def test_requests_in_sequence_take_their_images_in_order(tmp_path, params, train):
    """q1 names row 7 (and takes its near-duplicate 32), q2 names row 32 again and the victim: row 32
    stays q1's, and each row of the forget set is marked with the request that took it."""
    params = sequence_params(params, tmp_path, [{"name": "img-07"}], [{"name": "img-32"}, {"name": "victim"}])
    choice = choose(params, train)
    assert choice.rows.tolist() == [7, 9, 32] and choice.request.tolist() == [0, 1, 0]
    assert {e["row"]: e["request"] for e in choice.evidence} == {7: "q1", 9: "q2", 32: "q1"}
    save_npz(tmp_path / "train.npz", **train)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    forget_set_stage.main(["--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "train.npz"),
                           "--out", str(tmp_path / "forget.npz"), "--table", str(tmp_path / "forget.csv"),
                           "--png", str(tmp_path / "forget.png")])
    forget = load_forget_set(tmp_path / "forget.npz")
    assert dict(zip(forget["distinct"].tolist(), forget["request"].tolist())) == {7: 0, 9: 1, 32: 0}


def test_a_request_whose_every_image_an_earlier_one_took_is_named(tmp_path, params, train):
    params = sequence_params(params, tmp_path, [{"name": "img-07"}], [{"name": "img-32"}])
    with pytest.raises(UserError, match="q2.yaml: every image request q2 names was taken by an earlier request"):
        choose(params, train)
