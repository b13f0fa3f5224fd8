# Shared by every rule file: params validation, the experiment's names, helpers.
import sys

from pipeline.config import UserError, model_names, run_name, validate

PARAMS = "params.yaml"

try:
    validate(config, PARAMS)
except UserError as exc:
    sys.exit(f"error: {exc}")

MODELS = model_names(config)
RUNS = [m for m in MODELS if m != "pretrained"]


wildcard_constraints:
    method="[a-z_]+",
    seed=r"\d+",
    model=r"pretrained|retrained|[a-z_]+-s\d+",


def tracked(*keys):
    """The params.yaml sections a rule depends on, as its `params:` (Snakemake reruns a job
    whose values changed; pipeline/workflow.py turns the keys into DVC `params:`)."""

    def lookup(key):
        value = config
        for part in key.split("."):
            value = value[part]
        return value

    return {key: lookup(key) for key in keys}


def report_outputs():
    return expand("report/{name}", name=["table.csv", "table.md", "samples.png"])
