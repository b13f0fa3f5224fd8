# The data-unlearning experiment as a Snakemake workflow (README.md).
# params.yaml is the only source of parameters; dvc.yaml is generated from this workflow's
# jobs by `python -m pipeline.workflow` and tests/test_workflow.py checks that it is current.

configfile: "params.yaml"


report: "rules/captions/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    run=RUN_PATTERN,
    model=f"pretrained|retrained|{RUN_PATTERN}",
    kind="retain|neighbours",
    prompt=r"[A-Za-z0-9_-]+",

include: "rules/data.smk"

if TEXT_TO_IMAGE:  # model.kind text_to_image: the memorized-prompt protocol

    include: "rules/prompts.smk"

    rule all:
        input:
            prompt_outputs(),
        default_target: True

else:

    include: "rules/model.smk"
    include: "rules/unlearn.smk"
    include: "rules/evaluate.smk"

    rule all:
        input:
            report_outputs(),
            diagnostics_outputs(),
            rules.audit.output,
            requests_outputs(),
        default_target: True
