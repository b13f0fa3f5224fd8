"""pipeline.report: rows, the deletion step, per-method mean ± std, the tables and every figure."""

import csv
import io
import json

import numpy as np
import pytest
import yaml

from pipeline.artifacts import save_json, save_npz, save_text, to_csv
from pipeline.report.figures import sweep_figure
from pipeline.report.tables import deletion_step, image_index, mean_std, model_method, row, summary, sweep_grids
from pipeline.stages.report import main
from tests.conftest import TINY


def metrics(model, rate, n=1000, fid=0.3, **extra):
    """A metrics JSON as pipeline.metrics writes it, with made-up figures."""
    figures = {"nll": 3.0, "auc": 0.5, "nsscd": 0.5, "time": 10.0, **extra}
    return {
        "model": model, "n_samples": n,
        "forget_reproduction": {"rate": rate, "count": round(rate * n),
                                "threshold": {"derivation": "absolute: L2 < 1"}},
        "nn_memorization": {"rate": rate / 2},
        "quality": {"features": "classifier", "fid": fid, "is_mean": 9.0, "description": "classifier features"},
        "nll": {"bits_per_dim": figures["nll"], "nfe": 100},
        "probe": {"pixel_l2": 1.0, "similarity": 0.8, "nsscd": figures["nsscd"], "embedding": "digit-classifier"},
        "membership": {"auc": figures["auc"]},
        "cost": {"wall_time_s": figures["time"], "steps": 5, "peak_rss_mib": 900.0},
        "per_image": [{"probe_pixel_l2": 1.0, "nsscd": figures["nsscd"]}],
    }


def test_row_names_method_and_seed():
    r = row(metrics("retrack-s12", 0.004))
    assert (r["method"], r["seed"]) == ("retrack", "12")
    assert row(metrics("siss_no_is-s0", 0.0))["method"] == "siss_no_is"
    assert row(metrics("retrack+t0-499+r2-s1", 0.0))["method"] == "retrack+t0-499+r2"
    assert model_method("retrack+t0-499-s3-i12") == ("retrack+t0-499", "3")
    r = row(metrics("pretrained", 0.042, fid=0.2951, nll=2.5), deletion_step=None)
    assert (r["method"], r["seed"], r["forget_reproduction_pct"], r["fid"]) == ("pretrained", "", 4.2, 0.2951)
    assert (r["nn_memorization_pct"], r["nll_bits_per_dim"], r["wall_time_s"]) == (2.1, 2.5, 10.0)


@pytest.mark.parametrize("pcts, step", [
    ([4.2, 1.0, 0.0, 0.0, 0.0], 100),   # stays at 0 from step 100
    ([4.2, 0.0, 1.0, 0.0, 0.0], 150),   # came back at 100: only from 150 on
    ([4.2, 0.0, 0.0, 0.0, 0.4], 50),    # 0.4 % is within 0.5 %
    ([4.2, 0.0, 0.0, 0.0, 0.6], None),  # not deleted at the end
    ([0.0, 0.0, 0.0, 0.0, 0.0], 0),     # nothing to delete
])
def test_deletion_step_is_the_first_step_from_which_forgetting_holds(pcts, step):
    points = [{"step": s, "forget_reproduction_pct": p} for s, p in zip([0, 50, 100, 150, 250], pcts)]
    assert deletion_step(points[::-1], rate=0.005) == step


def test_summary_is_mean_and_sample_std_per_method_references_first_and_last():
    rows = [row(metrics(name, rate)) for name, rate in
            [("retrained", 0.0), ("naive-s0", 0.01), ("pretrained", 0.05), ("naive-s1", 0.03), ("naive-s2", 0.05)]]
    table = summary(rows)
    assert list(table) == ["pretrained", "naive", "retrained"]
    assert table["naive"]["forget_reproduction_pct"] == pytest.approx({"mean": 3.0, "std": 2.0, "n": 3})
    assert table["pretrained"]["forget_reproduction_pct"] == {"mean": 5.0, "std": 0.0, "n": 1}
    assert table["naive"]["deletion_step"] == {"mean": None, "std": None, "n": 0}
    assert mean_std(table["naive"]["forget_reproduction_pct"], ".2f") == "3.00 ± 2.00"
    assert mean_std(table["pretrained"]["forget_reproduction_pct"], ".2f") == "5.00"


def write_inputs(tmp_path, rng, names, params):
    """metrics/probe/samples files of ``names``, trajectories, the data and forget set, params."""
    paths = {"metrics": [], "probes": [], "samples": [], "trajectories": []}
    for i, name in enumerate(names):
        rate = {"pretrained": 0.05, "naive-s0": 0.01, "naive-s1": 0.03, "retrained": 0.0}.get(name, 0.02)
        save_json(tmp_path / f"{name}.json", metrics(name, rate, fid=0.3 + 0.1 * i))
        save_npz(tmp_path / f"{name}.probe.npz", noised=rng.random((1, 2, 1, 4, 4), dtype=np.float32),
                 reconstructions=rng.random((1, 2, 1, 4, 4), dtype=np.float32))
        save_npz(tmp_path / f"{name}.samples.npz", samples=rng.random((70, 1, 4, 4), dtype=np.float32))
        for key, suffix in (("metrics", ".json"), ("probes", ".probe.npz"), ("samples", ".samples.npz")):
            paths[key].append(str(tmp_path / f"{name}{suffix}"))
        if name != "retrained":
            steps = [0] if name == "pretrained" else [2, 4, 5]
            rows = [{"step": s, "forget_reproduction_pct": 5.0 / (s + 1) ** 2, "forget_reproduced": 1, "n_samples": 20,
                     "fid": 1.0} for s in steps]
            (tmp_path / "traj").mkdir(exist_ok=True)
            save_text(tmp_path / "traj" / f"{name}.csv", to_csv(rows))
            paths["trajectories"].append(str(tmp_path / "traj" / f"{name}.csv"))
    save_npz(tmp_path / "train.npz", images=rng.integers(0, 255, (6, 1, 4, 4), dtype=np.uint8),
             labels=np.zeros(6, dtype=np.int64), injected=np.r_[np.full(5, -1), 0], names=np.array(list("abcdef")))
    save_npz(tmp_path / "forget.npz", rows=np.array([5]), group=np.array([0]), distinct=np.array([5]),
             request=np.zeros(1))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "train.npz"),
            "--forget", str(tmp_path / "forget.npz"), "--out-dir", str(tmp_path / "report")]
    for key, values in paths.items():
        args += [f"--{key}", *values]
    return args


def test_report_files(tmp_path, rng):
    params = yaml.safe_load(TINY.read_text())
    params["experiment"].update(methods=["naive"], seeds=[0, 1])
    params["experiment"]["sweep"]["methods"] = []
    names = ["pretrained", "naive-s0", "naive-s1", "retrained"]
    main(write_inputs(tmp_path, rng, [names[i] for i in (3, 1, 0, 2)], params))  # any order in, this order out
    out = tmp_path / "report"
    methods = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [r["method"] for r in methods] == ["pretrained", "naive", "retrained"]
    assert float(methods[1]["forget_reproduction_pct_mean"]) == pytest.approx(2.0)
    assert float(methods[1]["forget_reproduction_pct_std"]) == pytest.approx(np.std([1.0, 3.0], ddof=1))
    models = list(csv.DictReader(io.StringIO((out / "models.csv").read_text())))
    assert [r["model"] for r in models] == names
    # the deletion step: 5 / (s + 1)^2 % is 0.56 % at step 2, 0.2 % at 4, 0.14 % at 5
    assert [r["deletion_step"] for r in models] == ["", "4", "4", ""]
    md = (out / "table.md").read_text()
    assert "| naive | 2 | 2.00 ± 1.41 |" in md and "**retrained (reference)**" in md
    assert "absolute: L2 < 1" in md  # the threshold's derivation is stated
    assert json.loads((out / "summary.json").read_text())["naive"]["fid"]["n"] == 2
    for png in ["samples.png", "pareto.png", "probe.png", "steps.png"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert not (out / "sweep.png").exists()
    steps = list(csv.DictReader(io.StringIO((out / "steps.csv").read_text())))
    assert {r["model"] for r in steps} == {"pretrained", "naive-s0", "naive-s1"}


# --- the time/frequency sweep ------------------------------------------------------------------------

SWEEP = {"methods": ["retrack", "neggrad"], "windows": [None, [0, 499]], "radii": [None, 2, 0.5]}


def sweep_rows():
    """(model, forget rate, FID) for two seeds; some cells have one seed, some none."""
    runs = [("retrack-s0", 0.01, 0.30), ("retrack-s1", 0.03, 0.50),  # (none, none)
            ("retrack+r2-s0", 0.10, 1.00), ("retrack+r2-s1", 0.20, 2.00),  # (none, 2)
            ("retrack+t0-499+r0.5-s1", 0.07, 0.70),  # ([0, 499], 0.5): one seed
            ("retrack+t0-499-s0", 0.40, 4.00), ("retrack+t0-499-s1", 0.60, 6.00),  # ([0, 499], none)
            ("neggrad+t0-499+r2-s0", 0.05, 0.25), ("neggrad+t0-499+r2-s1", 0.15, 0.75),
            ("pretrained", 0.9, 9.0), ("retrained", 0.8, 8.0), ("naive-s0", 0.7, 7.0),
            ("retrack+t0-49-s0", 0.99, 9.9), ("retrack+r20-s0", 0.98, 9.8)]  # outside the grid
    return [row(metrics(name, rate, fid=fid)) for name, rate, fid in runs]


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
    params = yaml.safe_load(TINY.read_text())
    params["experiment"].update(methods=["retrack"], seeds=[0, 1],
                                sweep={"methods": ["retrack"], "windows": [None, [0, 499]], "radii": [None, 2]})
    main(write_inputs(tmp_path, rng, ["pretrained", "retrack-s0", "retrack-s1", "retrack+t0-499+r2-s0"], params))
    assert (tmp_path / "report/sweep.png").read_bytes()[:4] == b"\x89PNG"


# --- per-image runs ------------------------------------------------------------------------------------


def test_image_index_maps_forget_images_to_the_models_that_were_judged_on_them():
    assert [image_index("pretrained", i) for i in range(3)] == [0, 1, 2]
    assert [image_index("retrack-s0", i) for i in range(3)] == [0, 1, 2]
    assert [image_index("retrack-s0-i1", i) for i in range(3)] == [None, 0, None]


def test_report_of_per_image_runs_averages_over_images(tmp_path, rng):
    """Two forget images, one run each: the method's row is their mean, the probe figure pairs each
    image with its own run (the pretrained probe has both images, each run's has its one)."""
    params = yaml.safe_load(TINY.read_text())
    params["experiment"].update(methods=["naive"], seeds=[0], retrain=False, per_image=True,
                                sweep={"methods": [], "windows": [None], "radii": [None]})
    params["forget"].update(strategy="indices", indices=[4, 5])
    args = write_inputs(tmp_path, rng, ["pretrained", "naive-s0-i0", "naive-s0-i1"], params)
    pretrained = metrics("pretrained", 0.05)
    pretrained["per_image"] *= 2
    save_json(tmp_path / "pretrained.json", pretrained)
    save_npz(tmp_path / "pretrained.probe.npz", noised=rng.random((2, 2, 1, 4, 4), dtype=np.float32),
             reconstructions=rng.random((2, 2, 1, 4, 4), dtype=np.float32))
    save_npz(tmp_path / "forget.npz", rows=np.array([4, 5]), group=np.array([0, 1]), distinct=np.array([4, 5]),
             request=np.zeros(2))
    main(args)
    md = (tmp_path / "report/table.md").read_text()
    assert "mean ± std over seeds and forget images" in md
    assert "| naive | 2 | 2.00 ± 0.00 |" in md
    assert (tmp_path / "report/probe.png").read_bytes()[:4] == b"\x89PNG"


def test_prompt_report_averages_over_prompts_and_counts_the_share_mitigated():
    from pipeline.report.prompts import method_rows, run_row

    def figures(share):
        return {"memorized_share": share, "similarity_mean": 0.5, "copy_share": share, "mitigated": float(share == 0),
                "plausibility": 0.9}

    def record(name, prompt, share, step):
        return {"model": name, "run": {"method": "siss", "seed": 0, "prompt": prompt, "forget_generations": 3,
                                       "retain_generations": 9},
                "prompts": {prompt: {"caption": figures(share), "modified": figures(share),
                                     "first_mitigated_step": step}},
                "controls": {"a three": 0.8, "an eight": 0.6}, "cost": {"wall_time_s": 10.0, "peak_rss_mib": 500.0,
                                                                       "peak_cuda_mib": None}}

    pretrained = {"prompts": {p: {"caption": figures(0.25), "modified": figures(0.25)} for p in ("a", "b", "c")}}
    rows = [run_row(pretrained, record(f"siss-s0-i{i}", prompt, share, step))
            for i, (prompt, share, step) in enumerate([("a", 0.0, 5), ("b", 0.5, None), ("c", 0.0, 10)])]
    assert rows[0]["control_similarity"] == pytest.approx(0.7) and rows[1]["caption_memorized_before"] == 0.25
    (siss,) = method_rows(rows)
    assert siss["prompts"] == 3 and siss["caption_mitigated"] == pytest.approx(2 / 3)
    assert siss["caption_memorized_after"] == pytest.approx(0.5 / 3) and siss["first_mitigated_step_median"] == 7.5
    assert siss["peak_cuda_mib"] is None and siss["wall_time_s"] == 10.0
