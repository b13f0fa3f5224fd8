"""The workflow end to end, on the tiny params, in temporary copies of the repository:
Snakemake runs everything, has nothing left to do after, reruns only the branch whose
parameter changed, stops on bad params before any compute; `dvc repro` in a fresh git
repository runs the same stages and gets the same numbers."""

import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers import DDPMPipeline
from PIL import Image

from pipeline.params.validation import load_params
from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.workflow
WORKFLOW_FILES = ["Snakefile", "rules", "profiles", "envs", "pipeline", ".dvc", ".dvcignore"]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def make_workdir(path: Path) -> Path:
    """A copy of the workflow with the tiny params as params.yaml and MNIST already fetched."""
    path.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, path / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
        elif src.exists():
            shutil.copy(src, path / name)
    shutil.copy(TINY, path / "params.yaml")
    mnist = ROOT / "data/raw/mnist.npz"
    if mnist.is_file():  # `make test` fetched it; otherwise the fetch_mnist rule downloads it
        (path / "data/raw").mkdir(parents=True)
        shutil.copy(mnist, path / "data/raw/mnist.npz")
    return path


def run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "snakemake", "--cores", "2", *args, check=check)


def planned_jobs(plan: str) -> dict[str, int]:
    """The jobs per rule of a dry run's first "Job stats" table."""
    lines = plan[plan.index("Job stats:"):].splitlines()[3:]
    return {rule: int(count) for rule, count in map(str.split, lines[:lines.index("")])}


def output_mtimes(workdir: Path) -> dict[str, int]:
    files = {}
    for top in ["data", "models", "samples", "metrics", "trajectory", "attacks", "report"]:
        for p in (workdir / top).rglob("*"):
            if p.is_file():
                files[str(p.relative_to(workdir))] = p.stat().st_mtime_ns
    return files


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("snakemake"))
    snakemake(workdir)
    return workdir


def test_dvc_yaml_is_current():
    run(ROOT, sys.executable, "-m", "pipeline.workflow", "--check")


def test_snakemake_lint_is_clean():
    result = run(ROOT, sys.executable, "-m", "snakemake", "--lint")
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakemake_runs_the_whole_experiment(snakemake_run):
    w = snakemake_run
    params = yaml.safe_load((w / "params.yaml").read_text())
    models = ["pretrained", "retrained", "naive-s0", "retrack-s0", "siss+r2-s0", "siss+t0-499+r2-s0"]
    for name in models:
        pipe = DDPMPipeline.from_pretrained(w / "models" / name)
        assert pipe.unet.config.sample_size == params["data"]["resolution"]
        samples = np.load(w / "samples" / f"{name}.npz")["samples"]
        assert samples.shape == (params["sampling"]["n"], 1, 8, 8)
        metrics = json.loads((w / "metrics" / f"{name}.json").read_text())
        assert metrics["model"] == name and 0 <= metrics["forget_reproduction"]["rate"] <= 1
        assert "derivation" in metrics["forget_reproduction"]["threshold"]
        assert 0 <= metrics["nn_memorization"]["rate"] <= 1
        assert np.isfinite(metrics["quality"]["fid"]) and metrics["quality"]["is_mean"] >= 1
        assert np.isfinite(metrics["nll"]["bits_per_dim"]) and metrics["nll"]["nfe"] > 0
        assert 0 <= metrics["membership"]["auc"] <= 1 and metrics["membership"]["nonmembers"] == 20
        assert metrics["probe"]["fallback"] and 0 <= metrics["probe"]["nsscd"] <= 1
        assert metrics["cost"]["wall_time_s"] > 0 and metrics["cost"]["peak_rss_mib"] > 0
        probe = np.load(w / "metrics" / f"{name}.npz")
        assert probe["reconstructions"].shape == (1, params["metrics"]["probe"]["draws"], 1, 8, 8)
        log = {"pretrained": "pretrain.log", "retrained": "retrain.log"}.get(name, f"unlearn/{name}.log")
        assert (w / "logs" / log).stat().st_size > 0
    assert (w / "models/retrack-s0/train_log.csv").read_text().count("\n") == params["methods"]["retrack"]["steps"] + 1
    checkpoints = sorted(p.name for p in (w / "models/retrack-s0/checkpoints").iterdir())
    assert checkpoints == ["step-000002", "step-000004"]  # checkpoint_every: 2, steps: 5
    DDPMPipeline.from_pretrained(w / "models/retrack-s0/checkpoints/step-000004")
    assert json.loads((w / "models/retrack-s0/cost.json").read_text())["steps"] == 5
    assert json.loads((w / "metrics/classifier.json").read_text())["test_accuracy"] > 0.5  # 10 classes, 100 steps
    steps = {name: [line.split(",")[0] for line in (w / f"trajectory/{name}.csv").read_text().splitlines()[1:]]
             for name in ["pretrained", "retrack-s0", "naive-s0", "retrained"]}
    assert steps == {"pretrained": ["0"], "retrack-s0": ["2", "4", "5"], "naive-s0": ["5"], "retrained": ["0"]}
    table = (w / "report/table.csv").read_text().splitlines()
    methods = ["pretrained", "naive", "retrack", "siss+r2", "siss+t0-499+r2", "retrained"]
    assert [line.split(",")[0] for line in table[1:]] == methods
    in_report = [line.split(",")[0] for line in (w / "report/models.csv").read_text().splitlines()[1:]]
    assert in_report == ["pretrained", *models[2:], "retrained"]
    assert "**retrained (reference)**" in (w / "report/table.md").read_text()
    assert list(json.loads((w / "report/summary.json").read_text())) == methods
    for png in ["report/samples.png", "report/pareto.png", "report/steps.png", "report/probe.png", "data/knn.png",
                "data/forget.png", "samples/pretrained.png"]:
        assert (w / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cell = json.loads((w / "models/siss+t0-499+r2-s0/unlearn.json").read_text())
    assert cell["forget_filter"] == {"window": [0, 499], "soft": None, "radius": 2, "radius_at_T": None}
    for name in models[2:4]:
        assert json.loads((w / f"diagnostics/{name}.json").read_text())["buckets"][1]["t_range"] == [500, 999]
    for png in ["report/sweep.png", "diagnostics/retrack-s0.png"]:
        assert (w / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (w / "data/forget.csv").read_text().splitlines()[:2] == ["row,name,label,copies", "300,tshirt,-1,30"]
    assert json.loads((w / "data/retain_index/index.json").read_text())["ntotal"] == 300
    attacked = sorted(str(p.relative_to(w / "attacks")) for p in (w / "attacks").rglob("*.json"))
    assert attacked == ["naive-s0/neighbours.json", "retrack-s0/neighbours.json", "retrained/neighbours.json"]
    assert [line.split(",")[:3] for line in (w / "report/resurgence.csv").read_text().splitlines()[1:]] == [
        ["naive-s0", "naive", "neighbours"], ["retrack-s0", "retrack", "neighbours"],
        ["retrained", "retrained", "neighbours"]]
    assert "## Relearning attacks" in (w / "report/table.md").read_text()
    audit = json.loads((w / "report/audit.json").read_text())
    assert [m["model"] for m in audit["models"]] == ["pretrained", "retrained", *models[2:]]
    assert all(m["verdict"] in ("PASS", "FAIL") and len(m["weights_sha256"]) == 64 for m in audit["models"])
    assert audit["requests"] == [{"id": "forget.strategy injected", "date": "–", "images": 1, "rows": 30}]
    assert "# Deletion audit" in (w / "report/audit.md").read_text()
    assert not list(w.rglob(".*.tmp-*")), "a temporary file was left behind"


def test_snakemake_report_has_the_figures_and_their_captions(snakemake_run, tmp_path):
    html = tmp_path / "report.html"
    run(snakemake_run, sys.executable, "-m", "snakemake", "--report", str(html))
    text = html.read_text()
    for name in ["pareto.png", "steps.png", "probe.png", "samples.png", "sweep.png", "table.csv"]:
        assert name in text, name
    assert "Forgetting against sample quality" in text  # rules/captions/pareto.rst


def test_memorized_forget_set_is_selected_from_the_pretrained_model(tmp_path):
    w = make_workdir(tmp_path)
    params = yaml.safe_load((w / "params.yaml").read_text())
    params["forget"] = {"strategy": "memorized", "memorized": {"samples": 8, "steps": 2, "batch_size": 8, "seed": 1,
                                                               "threshold": 0.5, "min_count": 2, "max_images": 3}}
    (w / "params.yaml").write_text(yaml.safe_dump(params))
    plan = snakemake(w, "--dry-run", "--printshellcmds", "data/forget.npz").stdout
    assert "rule pretrain:" in plan and "--model models/pretrained --out data/forget.npz" in plan


def test_a_deletion_request_is_an_input_of_the_forget_set_and_of_the_audit(tmp_path):
    w = make_workdir(tmp_path)
    request = {"id": "req-1", "date": "2026-12-01", "images": [{"name": "tshirt"}]}
    (w / "request.yaml").write_text(yaml.safe_dump(request))
    params = yaml.safe_load((w / "params.yaml").read_text())
    params["forget"] = {"strategy": "request", "request": {"file": "request.yaml", "near_duplicates": 0.1}}
    (w / "params.yaml").write_text(yaml.safe_dump(params))
    plan = snakemake(w, "--dry-run", "--forceall").stdout
    inputs = {block.split(":", 1)[0]: block for block in plan.split("\nrule ")[1:]}
    assert "request.yaml" in inputs["forget_set"].split("output:")[0]
    assert "request.yaml" in inputs["audit"].split("output:")[0]
    (w / "request.yaml").unlink()
    result = snakemake(w, "--dry-run", check=False)
    assert result.returncode != 0 and "forget.request.file: request.yaml: no such file" in result.stdout + result.stderr


def test_requests_in_sequence_each_start_from_the_previous_model_end_to_end(tmp_path):
    """Two injected images, two requests: naive-s0-q1 unlearns the T-shirt from the pretrained model,
    naive-s0-q2 the trousers from naive-s0-q1's; the sequence's report and the audit's verdict per
    request follow every step."""
    w = make_workdir(tmp_path)
    for k, image in enumerate(["tshirt", "trousers"], 1):
        (w / f"q{k}.yaml").write_text(yaml.safe_dump({"id": f"req-{k}", "date": "2026-12-01",
                                                      "images": [{"name": image}]}))
    params = yaml.safe_load((w / "params.yaml").read_text())
    params["data"]["inject"].append({"image": "trousers", "copies": 30})
    params["forget"] = {"strategy": "request", "request": {"file": None, "near_duplicates": 0.1}}
    params["experiment"].update(methods=["naive"], retrain=False, sweep={"methods": [], "windows": [None],
                                                                          "radii": [None]},
                                requests=["q1.yaml", "q2.yaml"])
    (w / "params.yaml").write_text(yaml.safe_dump(params))
    snakemake(w, "report/requests.md", "report/audit.json")
    names = np.load(w / "data/train.npz")["names"]
    for step, image, start in [(1, "tshirt", "models/pretrained"), (2, "trousers", "models/naive-s0-q1")]:
        summary = json.loads((w / f"models/naive-s0-q{step}/unlearn.json").read_text())
        assert summary["started_from"] == start and summary["request"] == step
        assert {names[r] for r in summary["forget_rows"]} == {image} and len(summary["forget_rows"]) == 30
    assert len(json.loads((w / "models/naive-s0/unlearn.json").read_text())["forget_rows"]) == 60  # all at once
    rows = list(csv.DictReader(io.StringIO((w / "report/requests.csv").read_text())))
    assert [(r["model"], r["request"], r["status"]) for r in rows] == [
        ("pretrained", "req-1", "kept"), ("pretrained", "req-2", "kept"), ("naive-s0-q1", "req-1", "deleted"),
        ("naive-s0-q1", "req-2", "kept"), ("naive-s0-q2", "req-1", "deleted"), ("naive-s0-q2", "req-2", "deleted")]
    distance = {r["model"]: float(r["weight_distance"]) for r in rows}
    assert distance["pretrained"] == 0 and 0 < distance["naive-s0-q1"] < distance["naive-s0-q2"]
    assert (w / "report/requests.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| naive-q2 | neighbours | 1 |" in (w / "report/requests.md").read_text()  # the last step, attacked
    audit = {m["model"]: m for m in json.loads((w / "report/audit.json").read_text())["models"]}
    assert [q["id"] for q in audit["naive-s0-q1"]["requests"]] == ["req-1", "req-2"]
    assert audit["naive-s0-q1"]["requests"][1]["verdict"] == "not yet requested"
    assert {i["row"] for i in audit["naive-s0-q1"]["images"]} == {int(np.flatnonzero(names == "tshirt")[0])}


def test_second_run_has_nothing_to_do(snakemake_run):
    assert "Nothing to be done" in snakemake(snakemake_run, "--dry-run").stdout


@contextlib.contextmanager
def edited_params(workdir: Path, edit=None, text: str | None = None):
    """params.yaml changed by ``edit`` (a function of the params) or replaced by ``text``, for the
    time of the ``with`` block; restored after."""
    good = (workdir / "params.yaml").read_text()
    if text is None:
        params = yaml.safe_load(good)
        edit(params)
        text = yaml.safe_dump(params)
    (workdir / "params.yaml").write_text(text)
    try:
        yield
    finally:
        (workdir / "params.yaml").write_text(good)


def test_bad_params_stop_before_any_compute(snakemake_run):
    w = snakemake_run
    before = output_mtimes(w)
    with edited_params(w, lambda p: p["methods"]["retrack"].update(lr="fast")):
        result = snakemake(w, check=False)
    assert result.returncode != 0
    assert "methods.retrack.lr: got 'fast', expected type number" in result.stdout + result.stderr
    assert output_mtimes(w) == before


def test_a_key_only_the_report_reads_reruns_only_the_report(snakemake_run):
    with edited_params(snakemake_run, lambda p: p["metrics"]["trajectory"].update(deleted_rate=0.5)):
        plan = snakemake(snakemake_run, "--dry-run").stdout
    assert planned_jobs(plan) == {"report": 1, "all": 1, "total": 2}, plan


def test_key_order_and_formatting_of_params_never_rerun(snakemake_run):
    params = yaml.safe_load((snakemake_run / "params.yaml").read_text())
    shuffled = {key: params[key] for key in reversed(list(params))}
    shuffled["metrics"] = {key: params["metrics"][key] for key in reversed(list(params["metrics"]))}
    text = "# reordered\n" + yaml.safe_dump(shuffled, sort_keys=False, default_flow_style=True)
    with edited_params(snakemake_run, text=text):
        plan = snakemake(snakemake_run, "--dry-run").stdout
    assert "Nothing to be done" in plan, plan


def test_a_missing_input_file_stops_the_run_whatever_outputs_exist(snakemake_run):
    """After a complete run, data.inject names a file that does not exist: the run stops before
    any job, naming the file and its key, and keeps every output."""
    w = snakemake_run
    before = output_mtimes(w)
    with edited_params(w, lambda p: p["data"]["inject"][0].update(image="no/such/tshirt.png")):
        result = snakemake(w, check=False)
    assert result.returncode != 0
    assert "data.inject[0].image: no/such/tshirt.png: no such file or directory" in result.stdout + result.stderr
    assert output_mtimes(w) == before


def test_corrupt_checkpoint_is_named(snakemake_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(snakemake_run / "models/pretrained", broken)
    weights = next(broken.glob("unet/*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    result = run(snakemake_run, sys.executable, "-m", "pipeline.stages.sample", "--params", "params.yaml", "--model",
                 str(broken), "--out", str(tmp_path / "s.npz"), "--png", str(tmp_path / "s.png"), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {broken}")
    assert not (tmp_path / "s.npz").exists()


def test_changed_method_param_reruns_only_its_branch(snakemake_run):
    w = snakemake_run
    before = output_mtimes(w)
    params = yaml.safe_load((w / "params.yaml").read_text())
    params["methods"]["retrack"]["lam"] = 0.5
    (w / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    snakemake(w)
    after = output_mtimes(w)
    changed = {f for f in after if after[f] != before.get(f)}
    expected_prefixes = ("models/retrack-s0/", "samples/retrack-s0.", "metrics/retrack-s0.", "diagnostics/retrack-s0.",
                         "trajectory/retrack-s0.", "attacks/retrack-s0/", "report/")
    assert changed and all(f.startswith(expected_prefixes) for f in changed), sorted(changed)
    assert {"metrics/retrack-s0.json", "report/table.csv"} <= changed
    assert "Nothing to be done" in snakemake(w, "--dry-run").stdout


def test_dvc_repro_runs_the_same_stages_with_the_same_numbers(snakemake_run, tmp_path):
    w = make_workdir(tmp_path / "dvc")
    run(w, sys.executable, "-m", "pipeline.workflow")  # dvc.yaml for these params
    run(w, "git", "init", "-q")
    if (w / "data/raw/mnist.npz").is_file():  # record the fetched MNIST instead of downloading it again
        (w / "logs").mkdir(exist_ok=True)
        (w / "logs/fetch_mnist.log").touch()
        run(w, "dvc", "commit", "--force", "fetch_mnist")
    result = run(w, "dvc", "repro")
    assert "Running stage 'unlearn-retrack@retrack-s0'" in result.stdout
    assert "up to date" in run(w, "dvc", "repro").stdout
    shown = run(w, "dvc", "metrics", "show", "--json").stdout
    assert "forget_reproduction" in shown and "report/summary.json" in shown and "test_accuracy" in shown
    run(w, "dvc", "plots", "show", "-o", "plots")
    html = (w / "plots/index.html").read_text()
    assert "report/pareto.png" in html and "trajectory/retrack-s0.csv" in html
    same_params = (snakemake_run / "params.yaml").read_text() == (w / "params.yaml").read_text()
    models = ["pretrained", "retrained", "naive-s0"] + (["retrack-s0"] if same_params else [])
    for name in models:  # (an earlier test may have changed the retrack branch of the Snakemake run)
        ours = json.loads((w / f"metrics/{name}.json").read_text())
        theirs = json.loads((snakemake_run / f"metrics/{name}.json").read_text())
        assert ours.pop("cost")["steps"] == theirs.pop("cost")["steps"]  # wall time and memory vary
        assert ours == theirs, name
    # a key that only the report reads, changed in params.yaml: DVC reruns the params stage and the report
    changed = yaml.safe_load((w / "params.yaml").read_text())
    changed["metrics"]["trajectory"]["deleted_rate"] = 0.5
    (w / "params.yaml").write_text(yaml.safe_dump(changed))
    ran = re.findall(r"Running stage '([^']+)'", run(w, "dvc", "repro").stdout)
    assert ran == ["params", "report"], ran
    # the same values in another key order and format: only the params stage runs, to find nothing changed
    (w / "params.yaml").write_text(yaml.safe_dump({key: changed[key] for key in reversed(list(changed))},
                                                  sort_keys=False, default_flow_style=True))
    ran = re.findall(r"Running stage '([^']+)'", run(w, "dvc", "repro").stdout)
    assert ran == ["params"], ran


# --- the benchmarks' shape: a pretrained pipeline, an image folder, one run per forget image ----------


def cifar_like_workdir(path: Path) -> Path:
    """The tiny experiment reshaped like experiments/cifar10 and experiments/celebahq: a locally saved
    DDPMPipeline laid out like google/ddpm-cifar10-32 (model_index.json, unet/, scheduler/ with its
    clip_sample and variance settings), an RGB image folder with two classes, two forget files each
    unlearned alone (experiment.per_image)."""
    from diffusers import DDPMScheduler, UNet2DModel

    w = make_workdir(path)
    rng = np.random.default_rng(0)
    for i in range(40):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        (w / "images" / ("cat" if i % 2 else "dog")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(w / "images" / ("cat" if i % 2 else "dog") / f"{i:05d}.png")
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                       down_block_types=("AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D"),
                       layers_per_block=1, norm_num_groups=8)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                              variance_type="fixed_small")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(w / "hub/ddpm-cifar10-like")
    params = yaml.safe_load((w / "params.yaml").read_text())
    params["data"].update(source={"kind": "folder", "path": "images", "limit": None}, channels=3, inject=[],
                          heldout=8)
    params["model"].update(source="pretrained", pretrained="hub/ddpm-cifar10-like")
    params["forget"].update(strategy="files", files=["dog/00004.png", "cat/00001.png"])
    params["experiment"].update(methods=["retrack"], seeds=[0], retrain=False, per_image=True,
                                sweep={"methods": [], "windows": [None], "radii": [None]})
    params["methods"]["retrack"]["checkpoint_every"] = 0  # a trajectory point per run: the final model
    (w / "params.yaml").write_text(yaml.safe_dump(params))
    return w


def test_per_image_runs_of_a_pretrained_model_end_to_end(tmp_path):
    w = cifar_like_workdir(tmp_path)
    snakemake(w)
    forget = np.load(w / "data/forget.npz")
    names = np.load(w / "data/train.npz")["names"]
    assert [names[r] for r in np.sort(forget["distinct"])] == ["cat/00001.png", "dog/00004.png"]
    heldout = set(np.load(w / "data/heldout.npz")["names"])
    assert not heldout & {"cat/00001.png", "dog/00004.png"}
    for image, name in enumerate(["cat/00001.png", "dog/00004.png"]):  # image i: the i-th forget row
        summary = json.loads((w / f"models/retrack-s0-i{image}/unlearn.json").read_text())
        assert [names[r] for r in summary["forget_rows"]] == [name]
        metrics = json.loads((w / f"metrics/retrack-s0-i{image}.json").read_text())
        assert [names[p["row"]] for p in metrics["per_image"]] == [name]
    assert len(json.loads((w / "metrics/pretrained.json").read_text())["per_image"]) == 2
    table = (w / "report/table.md").read_text()
    assert "mean ± std over seeds and forget images" in table and "| retrack | 2 |" in table
    assert {p.name for p in (w / "diagnostics").glob("*.json")} == {"retrack-s0-i0.json", "retrack-s0-i1.json"}


@pytest.mark.parametrize("name, unlearn_jobs", [("mnist-tshirt", 18), ("cifar10", 50), ("celebahq", 50),
                                                ("requests", 2 * 3 * 3)])
def test_benchmark_experiments_plan_every_job(name, unlearn_jobs):
    """Each benchmark's whole plan, as its dvc.yaml has it (test_dvc_yaml_is_current checks that it
    is Snakemake's plan for its params.yaml, run in its directory): a run per method, seed and
    forget image, and every model sampled and scored."""
    params = load_params(ROOT / "experiments" / name / "params.yaml")
    stages = yaml.safe_load((ROOT / "experiments" / name / "dvc.yaml").read_text())["stages"]
    count = {rule: sum(len(stage.get("foreach", [None])) for name, stage in stages.items()
                       if name.split("-")[0] == rule) for rule in ("unlearn", "sample", "metrics")}
    models = 1 + unlearn_jobs + bool(params["experiment"]["retrain"])
    assert count == {"unlearn": unlearn_jobs, "sample": models, "metrics": models}
    assert all(dep.startswith("../../pipeline/") for stage in stages.values() for dep in stage.get("do", stage)["deps"]
               if dep.endswith(".py"))


def test_snakemake_runs_a_benchmark_in_its_directory(tmp_path):
    """`snakemake --directory experiments/cifar10` plans the benchmark there, reading its params.yaml
    (the SSCD model, a file from outside, as a placeholder)."""
    w = tmp_path / "cifar10"
    w.mkdir()
    shutil.copy(ROOT / "experiments/cifar10/params.yaml", w / "params.yaml")
    (w / "data").mkdir()
    (w / "data/sscd_disc_mixup.torchscript.pt").touch()
    plan = run(ROOT, sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1", "--directory", str(w)).stdout
    assert "models/retrack-s0-i9" in plan and "Job stats" in plan
