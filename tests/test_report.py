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


# --- the time/frequency sweep ------------------------------------------------------------------------

from pipeline.report import sweep_figure, sweep_grids  # noqa: E402

SWEEP = {"methods": ["retrack", "neggrad"], "windows": [None, [0, 499]], "radii": [None, 2, 0.5]}


def sweep_rows():
    """(model, forget rate, FD) for two seeds; some cells have one seed, some none."""
    runs = [("retrack-s0", 0.01, 0.30), ("retrack-s1", 0.03, 0.50),  # (none, none)
            ("retrack+r2-s0", 0.10, 1.00), ("retrack+r2-s1", 0.20, 2.00),  # (none, 2)
            ("retrack+t0-499+r0.5-s1", 0.07, 0.70),  # ([0, 499], 0.5): one seed
            ("retrack+t0-499-s0", 0.40, 4.00), ("retrack+t0-499-s1", 0.60, 6.00),  # ([0, 499], none)
            ("neggrad+t0-499+r2-s0", 0.05, 0.25), ("neggrad+t0-499+r2-s1", 0.15, 0.75),
            ("pretrained", 0.9, 9.0), ("retrained", 0.8, 8.0), ("naive-s0", 0.7, 7.0),
            ("retrack+t0-49-s0", 0.99, 9.9), ("retrack+r20-s0", 0.98, 9.8)]  # outside the grid
    return [row(metrics(name, rate, 1000, fd)) for name, rate, fd in runs]


def test_sweep_grids_are_means_over_seeds():
    grids = sweep_grids(sweep_rows(), SWEEP)
    assert set(grids) == {"retrack", "neggrad"}
    nan = np.nan
    expected = {
        "retrack": {"forget": [[2.0, 15.0, nan], [50.0, nan, 7.0]], "quality": [[0.4, 1.5, nan], [5.0, nan, 0.7]]},
        "neggrad": {"forget": [[nan, nan, nan], [nan, 10.0, nan]], "quality": [[nan, nan, nan], [nan, 0.5, nan]]},
    }
    for method, cells in expected.items():
        for key, grid in cells.items():
            assert grids[method][key].shape == (2, 3)
            np.testing.assert_allclose(grids[method][key], np.array(grid), rtol=1e-9, err_msg=f"{method} {key}")


def test_sweep_figure_writes_a_png(tmp_path):
    grids = sweep_grids(sweep_rows(), SWEEP)
    sweep_figure(tmp_path / "sweep.png", grids, SWEEP, n_seeds=2)
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_main_with_a_sweep_writes_sweep_png(tmp_path, rng):
    import yaml

    from tests.conftest import TINY

    params = yaml.safe_load(TINY.read_text())
    params["experiment"].update(seeds=[0, 1], sweep={"methods": ["retrack"], "windows": [None, [0, 499]],
                                                     "radii": [None, 2]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    names = ["pretrained", "retrack-s0", "retrack-s1", "retrack+t0-499+r2-s0"]
    paths, samples = [], []
    for i, name in enumerate(names):
        save_json(tmp_path / f"{name}.json", metrics(name, 0.01 * i, 100, 0.3))
        save_npz(tmp_path / f"{name}.npz", samples=rng.random((4, 1, 4, 4), dtype=np.float32))
        paths.append(str(tmp_path / f"{name}.json"))
        samples.append(str(tmp_path / f"{name}.npz"))
    main(["--metrics", *paths, "--samples", *samples, "--out-dir", str(tmp_path / "report"),
          "--params", str(tmp_path / "params.yaml")])
    assert (tmp_path / "report/sweep.png").read_bytes()[:4] == b"\x89PNG"
    main(["--metrics", *paths[:2], "--samples", *samples[:2], "--out-dir", str(tmp_path / "plain")])
    assert not (tmp_path / "plain/sweep.png").exists()
