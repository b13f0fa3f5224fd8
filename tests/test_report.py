import csv
import io
import json

import numpy as np

from pipeline.artifacts import save_json, save_npz
from pipeline.report import main, mean_std, row


def metrics(model, rate, n, fd):
    threshold = {"derivation": "absolute: L2 < 1"}
    return {"model": model, "n_samples": n, "quality": {"value": fd},
            "forget_reproduction": {"rate": rate, "count": round(rate * n), "threshold": threshold}}


def test_row_names_method_and_seed():
    assert row(metrics("retrack-s12", 0.004, 1000, 0.25))["method"] == "retrack"
    assert row(metrics("retrack-s12", 0.004, 1000, 0.25))["seed"] == "12"
    assert row(metrics("siss_no_is-s0", 0.0, 10, 1.0))["method"] == "siss_no_is"
    assert row(metrics("retrained", 0.0, 10, 1.0))["method"] == "retrained"
    r = row(metrics("pretrained", 0.042, 1000, 0.2951))
    assert (r["method"], r["seed"], r["forget_reproduction_pct"], r["quality_pca_fd"]) == ("pretrained", "", 4.2, 0.295)


def test_mean_std_uses_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00 (n=3)"
    assert mean_std([0.5]) == "0.50 ± 0.00 (n=1)"


def test_report_files(tmp_path, rng):
    names = ["pretrained", "naive-s0", "naive-s1"]
    paths, samples = [], []
    for i, name in enumerate(names):
        save_json(tmp_path / f"{name}.json", metrics(name, [0.05, 0.01, 0.03][i], 100, 0.3))
        save_npz(tmp_path / f"{name}.npz", samples=rng.random((70, 1, 4, 4), dtype=np.float32))
        paths.append(str(tmp_path / f"{name}.json"))
        samples.append(str(tmp_path / f"{name}.npz"))
    main(["--metrics", *paths, "--samples", *samples, "--out-dir", str(tmp_path / "report")])
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report/table.csv").read_text())))
    assert [r["model"] for r in rows] == names
    assert [float(r["forget_reproduction_pct"]) for r in rows] == [5.0, 1.0, 3.0]
    md = (tmp_path / "report/table.md").read_text()
    assert "| naive | 2.00 ± 1.41 (n=2) |" in md
    assert (tmp_path / "report/samples.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "pretrained.json").read_text())["model"] == "pretrained"
