# Shared by every file of rules: params validation, the experiment's names, helpers.
import sys
from pathlib import Path

import yaml

from pipeline.config import RUN_PATTERN, Run, UserError, model_names, runs, validate

try:
    validate(config, "params.yaml")
except UserError as exc:
    sys.exit(f"error: {exc}")
# Every stage reads params.yaml itself (so that DVC runs the same commands): a --config or
# --configfile on the command line would silently disagree with what the stages read.
if config != yaml.safe_load(Path("params.yaml").read_text()):
    sys.exit("error: the stages read params.yaml; edit it instead of passing --config/--configfile")

MODELS = model_names(config)


def tracked(*keys):
    """The params.yaml sections that a job depends on, given as its `params` (Snakemake reruns a job
    whose values changed; pipeline/workflow.py turns the keys into DVC `params:`)."""

    def lookup(key):
        value = config
        for part in key.split("."):
            value = value[part]
        return value

    return {key: lookup(key) for key in keys}


def report_outputs():
    sweep = config["experiment"].get("sweep") or {}
    figures = ["samples.png", *(["sweep.png"] if sweep.get("methods") else [])]
    return expand("report/{name}", name=["table.csv", "table.md", *figures])


def diagnostics_outputs():
    """Diagnostics of the runs of experiment.methods x seeds (not of every sweep cell)."""
    main_runs = [run.name for run in runs(config) if run.window is None and run.radius is None]
    return expand("diagnostics/{run}.{ext}", run=main_runs, ext=["json", "png"])


def data_inputs(wildcards):
    """The base images (MNIST, or the image folder) and the forget images given as files."""
    source = config["data"]["source"]
    base = rules.fetch_mnist.output[0] if source["kind"] == "mnist" else source["path"]
    files = [item["image"] for item in config["data"]["inject"] if item["image"] != "tshirt"]
    return {"base": base, "forget_images": files}


def forget_inputs(wildcards):
    """The training set, and the pretrained model when the forget set is what that model reproduces."""
    inputs = {"data": rules.data.output[0]}
    if config["forget"]["strategy"] == "memorized":
        inputs["model"] = rules.pretrain.output[0]
    return inputs


def knn_inputs(wildcards):
    """The training set, the forget set, and the encoder of a latent or embedding space."""
    inputs = {"data": rules.data.output[0], "forget": rules.select_forget.output.npz}
    if config["knn"]["space"] != "pixels":
        inputs["encoder"] = config["knn"]["encoder"]
    return inputs
