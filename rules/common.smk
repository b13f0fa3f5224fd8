# Shared by every file of rules: params validation, the experiment's names, helpers.
import sys
from pathlib import Path

import yaml

from pipeline.config import UserError, model_names, validate

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
    return expand("report/{name}", name=["table.csv", "table.md", "samples.png"])


def data_inputs(wildcards):
    """The base images (MNIST, or the image folder) and the forget images given as files."""
    source = config["data"]["source"]
    base = rules.fetch_mnist.output[0] if source["kind"] == "mnist" else source["path"]
    files = [item["image"] for item in config["data"]["inject"] if item["image"] != "tshirt"]
    return {"base": base, "forget_images": files}
