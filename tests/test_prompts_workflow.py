"""The text-to-image protocol end to end (model.kind: text_to_image): the workflow with the cut-down
params of experiments/memorized-prompts (tests/tiny_prompts_params.yaml), and its bad inputs, each
stopped before any compute with one message."""

import json
import shutil

import numpy as np
import pytest
import yaml
from diffusers import StableDiffusionPipeline

from pipeline.artifacts import load_npz
from tests.conftest import ROOT
from tests.test_workflow import edited_params, make_workdir, output_mtimes, planned_jobs, snakemake

pytestmark = pytest.mark.workflow
PARAMS = ROOT / "tests/tiny_prompts_params.yaml"
PROMPTS = ROOT / "tests/tiny_prompts.jsonl"
RUNS = ["siss-s0-i0", "siss-s0-i1", "retrack-s0-i0", "retrack-s0-i1"]


def prompts_workdir(path):
    w = make_workdir(path)
    shutil.copy(PARAMS, w / "params.yaml")
    shutil.copy(PROMPTS, w / "prompts.jsonl")
    return w


@pytest.fixture(scope="module")
def prompts_run(tmp_path_factory):
    w = prompts_workdir(tmp_path_factory.mktemp("prompts"))
    snakemake(w)
    return w


def test_every_stage_of_the_protocol_runs_and_the_report_has_every_run(prompts_run):
    w = prompts_run
    for name in ["seven", "p3"]:
        generations = load_npz(w / f"prompts/{name}/generations.npz", ("images", "latents", "memorized"))
        assert generations["images"].shape == (12, 1, 16, 16) and generations["latents"].shape == (12, 4, 8, 8)
        assert 0 < generations["memorized"].sum() < 12  # k-means: both sides
        assert (w / f"prompts/{name}/generations.png").stat().st_size > 0
        assert len((w / f"prompts/{name}/generations.csv").read_text().splitlines()) == 13
    rows = (w / "report/prompts.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == RUNS
    summary = json.loads((w / "report/summary.json").read_text())
    assert list(summary) == ["siss", "retrack"] and summary["siss"]["prompts"] == 2
    assert "| siss | 2 |" in (w / "report/prompts.md").read_text()
    assert (w / "report/generations.png").stat().st_size > 0 and (w / "report/prompts.png").stat().st_size > 0


def test_each_run_is_a_loadable_pipeline_with_its_checkpoints_cost_and_figures(prompts_run):
    w = prompts_run
    pipe = StableDiffusionPipeline.from_pretrained(w / "models/retrack-s0-i0", use_safetensors=True)
    start = StableDiffusionPipeline.from_pretrained(w / "models/pretrained", use_safetensors=True)
    changed = [not np.allclose(a.detach(), b.detach()) for a, b in zip(pipe.unet.parameters(), start.unet.parameters())]
    assert any(changed)
    assert all(np.allclose(a.detach(), b.detach()) for a, b in zip(pipe.vae.parameters(), start.vae.parameters()))
    assert [p.name for p in (w / "models/retrack-s0-i0/checkpoints").iterdir()] == ["step-000002"]
    summary = json.loads((w / "models/retrack-s0-i0/unlearn.json").read_text())
    assert summary["prompt"] == "seven" and summary["modified"] == "the digit seven, written by hand"
    assert summary["forget_generations"] + summary["retain_generations"] == 12
    record = json.loads((w / "metrics/retrack-s0-i0.json").read_text())
    assert [p["step"] for p in record["prompts"]["seven"]["checkpoints"]] == [2, 3]
    assert set(record["controls"]) == {"a handwritten digit three"} and record["cost"]["peak_rss_mib"] > 0
    pretrained = json.loads((w / "metrics/pretrained.json").read_text())
    assert set(pretrained["prompts"]) == {"seven", "p3"}


def test_an_evaluation_key_reruns_only_the_evaluations_and_the_report(prompts_run):
    with edited_params(prompts_run, lambda p: p["text_to_image"]["evaluation"].update(n=5)):
        plan = snakemake(prompts_run, "--dry-run").stdout
    assert planned_jobs(plan) == {"all": 1, "evaluate_pretrained": 1, "evaluate_prompt": 4, "report_prompts": 1,
                                  "total": 7}, plan
    with edited_params(prompts_run, lambda p: p["methods"]["siss"].update(steps=4)):
        plan = snakemake(prompts_run, "--dry-run").stdout
    assert planned_jobs(plan) == {"all": 1, "evaluate_prompt": 2, "report_prompts": 1, "total": 6,
                                  "unlearn_prompt": 2}, plan


# Each param error and each kind of bad line of a prompts file is checked by tests/test_params.py and
# tests/test_prompts.py; here, that the workflow stops on them before any job.
@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["text_to_image"].update(lora={"rank": 4, "alpha": 4}),
     "text_to_image.lora: LoRA settings given, but text_to_image.train is 'full'"),
    (lambda p: p["text_to_image"].update(prompts="missing.jsonl"),
     "text_to_image.prompts: missing.jsonl: no such file"),
])
def test_bad_params_stop_before_any_compute(prompts_run, edit, expected):
    before = output_mtimes(prompts_run)
    with edited_params(prompts_run, edit):
        result = snakemake(prompts_run, "--dry-run", check=False)
    assert result.returncode != 0 and expected in result.stdout + result.stderr
    assert output_mtimes(prompts_run) == before


def test_a_bad_prompts_file_stops_the_workflow_naming_the_line(prompts_run):
    good = (prompts_run / "prompts.jsonl").read_text()
    try:
        (prompts_run / "prompts.jsonl").write_text(good + '{"caption": "a digit", "colour": "red"}\n')
        result = snakemake(prompts_run, "--dry-run", check=False)
    finally:
        (prompts_run / "prompts.jsonl").write_text(good)
    assert result.returncode != 0 and "line 3: unknown fields ['colour']" in result.stdout + result.stderr


def test_a_lora_run_saves_the_merged_pipeline_and_its_adapters(prompts_run, tmp_path):
    """The unlearn_prompt stage with train: lora on the workflow's model and generations: only the
    adapters train, and the starting model with the saved adapters is the saved merged model."""
    import torch

    from pipeline.stages.unlearn_prompt import main

    w = prompts_run
    params = yaml.safe_load((w / "params.yaml").read_text())
    params["text_to_image"].update(train="lora", lora={"rank": 2, "alpha": 4}, prompts=str(w / "prompts.jsonl"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "siss-s0-i0"
    main(["--params", str(tmp_path / "params.yaml"), "--run", "siss-s0-i0", "--model", str(w / "models/pretrained"),
          "--generations", str(w / "prompts/seven/generations.npz"), "--out", str(out)])
    summary = json.loads((out / "unlearn.json").read_text())
    assert summary["train"] == "lora" and 0 < summary["trainable_parameters"] < 20000
    merged = StableDiffusionPipeline.from_pretrained(out, use_safetensors=True)
    start = StableDiffusionPipeline.from_pretrained(w / "models/pretrained", use_safetensors=True)
    start.load_lora_weights(out / "lora")
    start.fuse_lora()
    z, t, c = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 32)
    with torch.no_grad():
        expected = start.unet(z, t, encoder_hidden_states=c).sample
        got = merged.unet(z, t, encoder_hidden_states=c).sample
        unchanged = StableDiffusionPipeline.from_pretrained(w / "models/pretrained", use_safetensors=True).unet(
            z, t, encoder_hidden_states=c).sample
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, unchanged, atol=1e-6)
