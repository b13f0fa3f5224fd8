# The data-unlearning experiment as a Snakemake workflow (README.md).
# params.yaml is the only source of parameters; dvc.yaml is generated from this workflow's
# jobs by `python -m pipeline.workflow` and tests/test_workflow.py checks that it is current.

configfile: "params.yaml"


include: "rules/common.smk"


wildcard_constraints:
    method="[a-z_]+",
    seed=r"\d+",
    model=r"pretrained|retrained|[a-z_]+-s\d+",

include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/unlearn.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        report_outputs(),
    default_target: True
