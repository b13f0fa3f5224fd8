"""The report on deletion requests in sequence (pipeline/report/requests.py): each request's figures
after each step, the model's FID and weight distance, averaged over seeds in the table."""

import pytest

from pipeline.diffusion.models import weight_distance
from pipeline.report.requests import sequence_figure, sequence_markdown, sequence_rows

REQUEST_OF = {3: 0, 8: 1, 9: 1}  # row 3 is request 0's image, rows 8 and 9 request 1's


def metrics(model, reproduced, nll=(6.0, 6.0, 6.0), fid=1.0, n=100):
    rows = (3, 8, 9)
    return {"model": model, "n_samples": n, "quality": {"fid": fid},
            "forget_reproduction": {"per_image": [{"row": r, "reproduced": c} for r, c in zip(rows, reproduced)]},
            "per_image": [{"row": r, "nll_bits_per_dim": v, "nsscd": 0.5} for r, v in zip(rows, nll)]}


MODELS = [metrics("pretrained", (10, 4, 6), fid=1.0), metrics("naive-s0-q1", (0, 5, 5), fid=1.5),
          metrics("naive-s0-q2", (2, 0, 0), nll=(5.0, 7.0, 9.0), fid=2.0), metrics("naive-s1-q1", (0, 3, 3), fid=1.1),
          metrics("naive-s1-q2", (0, 0, 0), fid=1.9)]
DISTANCES = {"pretrained": 0.0, "naive-s0-q1": 0.01, "naive-s0-q2": 0.02, "naive-s1-q1": 0.03, "naive-s1-q2": 0.04}


def test_each_request_is_the_mean_over_its_images_after_each_step():
    rows = sequence_rows(MODELS, DISTANCES, REQUEST_OF, ["q1", "q2"])
    got = {(r["model"], r["request"]): r for r in rows}
    assert [(r["model"], r["step"], r["request"], r["status"]) for r in rows[:4]] == [
        ("pretrained", 0, "q1", "kept"), ("pretrained", 0, "q2", "kept"),
        ("naive-s0-q1", 1, "q1", "deleted"), ("naive-s0-q1", 1, "q2", "kept")]
    assert got["pretrained", "q2"]["reproduction_pct"] == pytest.approx(5.0)  # (4 + 6) / 2 of 100 samples
    assert got["naive-s0-q2", "q1"]["reproduction_pct"] == pytest.approx(2.0)  # request 1's image came back
    assert got["naive-s0-q2", "q2"]["nll_bits_per_dim"] == pytest.approx(8.0)
    assert got["naive-s0-q2", "q2"]["fid"] == 2.0 and got["naive-s0-q2", "q2"]["weight_distance"] == 0.02


def test_the_table_averages_over_seeds_and_marks_what_was_deleted(tmp_path):
    rows = sequence_rows(MODELS, DISTANCES, REQUEST_OF, ["q1", "q2"])
    text = sequence_markdown(rows, ["q1", "q2"], 2)
    assert "mean over 2 seed(s)" in text
    assert "| naive | pretrained | 10.00 / 6.00 | 5.00 / 6.00 | 1.000 | 0.0000 |" in text
    assert "| naive | q1 (step 1) | deleted 0.00 / 6.00 | 4.00 / 6.00 | 1.300 | 0.0200 |" in text
    assert "| naive | q2 (step 2) | deleted 1.00 / 5.50 | deleted 0.00 / 7.00 | 1.950 | 0.0300 |" in text
    sequence_figure(tmp_path / "requests.png", rows, ["q1", "q2"])
    assert (tmp_path / "requests.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weight_distance_is_the_relative_l2_norm_of_the_change(unet):
    moved = type(unet).from_config(unet.config)
    moved.load_state_dict(unet.state_dict())
    params = list(moved.parameters())
    params[0].data += 1.0
    size = sum(float(p.detach().double().pow(2).sum()) for p in unet.parameters())
    expected = (params[0].numel() / size) ** 0.5
    assert weight_distance(moved, unet) == pytest.approx(expected, rel=1e-6)
    assert weight_distance(unet, unet) == 0.0
