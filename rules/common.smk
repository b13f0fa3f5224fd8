# Shared by every file of rules: the experiment's params, its names, helpers.
import json
import sys
from pathlib import Path

from pipeline.data.prompts import read_prompts
from pipeline.errors import UserError
from pipeline.params.inputs import external_files, missing_inputs, needs_classifier
from pipeline.params.runs import RUN_PATTERN, Run, model_names, prompt_runs, runs, sequence_runs
from pipeline.params.tracking import lookup, stage_keys
from pipeline.params.validation import read_changes, resolve

# params.yaml holds what the experiment changes; PARAMS, every key, is what the stages read too
# (pipeline/params/defaults.yaml merged under it), validated before any job is planned.
try:
    PARAMS = resolve(read_changes("params.yaml"))
except UserError as exc:
    sys.exit(f"error: {exc}")
# Every stage reads params.yaml itself (so that DVC runs the same commands): a --config or
# --configfile on the command line would silently disagree with what the stages read.
if config != (read_changes("params.yaml") or {}):
    sys.exit("error: the stages read params.yaml; edit it instead of passing --config/--configfile")

# Files from outside the workflow must exist whatever outputs already do (Snakemake would keep
# outputs made from a file that is gone); one message names the file and its key.
MISSING = missing_inputs(PARAMS, Path.cwd())
if MISSING:
    sys.exit(f"error: params.yaml: {MISSING[0]}")

# A text-to-image experiment's memorized prompts (text_to_image.prompts, checked line by line) and
# its runs, one per method x seed x prompt.
TEXT_TO_IMAGE = PARAMS["model"]["kind"] == "text_to_image"
try:
    PROMPT_LIST = read_prompts(PARAMS["text_to_image"]["prompts"]) if TEXT_TO_IMAGE else []
except UserError as exc:
    sys.exit(f"error: text_to_image.prompts: {exc}")
PROMPTS = [prompt.name for prompt in PROMPT_LIST]
PROMPT_RUNS = [run.name for run in prompt_runs(PARAMS, len(PROMPTS))]

MODELS = model_names(PARAMS)
SEQUENCE = [run.name for run in sequence_runs(PARAMS)]  # the runs of experiment.requests, in their own report
EXTERNAL = external_files(PARAMS)  # files from outside the workflow, inputs of the rules that read them
# Threads of the jobs that run torch: locally every core Snakemake has (torch uses them all, so two
# torch jobs never compete for cores); on a cluster, the profile's `cores` (CPUs per job).
# Every job also declares resources for cluster schedulers (profiles/slurm), namely mem_mb, runtime
# (minutes) and gpu, sized for the full-scale benchmarks; a profile overrides them per rule
# (set-resources), and locally a resource without a --resources limit constrains nothing.
TORCH_THREADS = workflow.cores


def tracked(rule):
    """The params a job of ``rule`` reads (pipeline.params.tracking), given as its `params`:
    Snakemake reruns a job whose values changed. Each value is canonical JSON, so that formatting
    and key order in params.yaml never count as a change."""
    return lambda wildcards: {key: json.dumps(lookup(PARAMS, key), sort_keys=True)
                              for key in stage_keys(rule, PARAMS, dict(wildcards))}


REPORT_FIGURES = ["pareto.png", "steps.png", "probe.png", "samples.png"]


def report_outputs(flagged=False):
    """The report's files; ``flagged``: its figures and tables marked for `snakemake --report`, each
    with its caption from rules/captions/."""
    sweep = PARAMS["experiment"].get("sweep") or {}
    figures = REPORT_FIGURES + (["sweep.png"] if sweep.get("methods") else [])
    tables = ["table.md", "table.csv", "models.csv", "summary.json", "pareto.csv", "steps.csv", "resurgence.csv"]
    if not flagged:
        return expand("report/{name}", name=tables + figures)
    captioned = {name: Path(name).stem for name in figures + ["table.csv"]}
    return [report(f"report/{name}", caption=f"captions/{captioned[name]}.rst", category="Unlearning report")
            if name in captioned else f"report/{name}" for name in tables + figures]


def main_runs():
    """The runs of experiment.methods x seeds (not the cells of the sweep, nor the steps of a
    sequence of requests)."""
    return [run.name for run in runs(PARAMS) if run.window is None and run.radius is None and run.request is None]


def sequence_attack_outputs():
    """A relearning attack of each kind on the last step of each sequence of requests: the model
    that has unlearned every request."""
    last = [run.name for run in sequence_runs(PARAMS) if run.request == len(PARAMS["experiment"]["requests"])]
    return expand("attacks/{model}/{kind}.json", model=last, kind=PARAMS["attack"]["kinds"])


def requests_outputs():
    """The report on a sequence of requests (experiment.requests), when there is one."""
    return expand("report/requests.{ext}", ext=["csv", "md", "png"]) if SEQUENCE else []


def diagnostics_outputs():
    """Diagnostics of the main runs."""
    return expand("diagnostics/{run}.{ext}", run=main_runs(), ext=["json", "png"])


def attack_outputs():
    """A relearning attack of each kind on each main run and on the retrained reference."""
    models = [*main_runs(), *(["retrained"] if PARAMS["experiment"]["retrain"] else [])]
    return expand("attacks/{model}/{kind}.json", model=models, kind=PARAMS["attack"]["kinds"])


def data_inputs(wildcards):
    """The base images (MNIST, or the image folder; torchvision data sets are found or downloaded
    by the stage itself) and the forget images given as files."""
    base = [rules.fetch_mnist.output[0]] if PARAMS["data"]["source"]["kind"] == "mnist" else EXTERNAL["base"]
    return {**({"base": base[0]} if base else {}), "forget_images": EXTERNAL["forget_images"]}


def base_option(wildcards, input):
    return f"--base {input.base} " if "base" in input.keys() else ""


def model_files(*kinds):
    """The input function of the files of ``kinds`` that a metric reads: the SSCD model (``sscd``)
    and the Inception weights (``inception``), when params name them."""
    return lambda wildcards: {kind: EXTERNAL[kind][0] for kind in kinds if EXTERNAL[kind]}


def forget_inputs(wildcards):
    """The training set, the deletion request of strategy ``request``, and the pretrained model when
    the forget set is what that model reproduces."""
    inputs = {"data": rules.data.output.train, **({"request": EXTERNAL["request"]} if EXTERNAL["request"] else {})}
    if PARAMS["forget"]["strategy"] == "memorized":
        inputs["model"] = rules.pretrain.output[0]
    return inputs


def knn_inputs(wildcards):
    """The training set, the forget set, and the encoder of a latent or embedding space."""
    inputs = {"data": rules.data.output.train, "forget": rules.forget_set.output.npz}
    return {**inputs, **{"encoder": path for path in EXTERNAL["encoder"]}}


def classifier_input(wildcards):
    """The digit classifier, for the stages that use it (pipeline.params.inputs.needs_classifier)."""
    return {"classifier": rules.classifier.output.model} if needs_classifier(PARAMS) else {}


def classifier_option(wildcards, input):
    return f"--classifier {input.classifier} " if "classifier" in input.keys() else ""


def trajectory_models():
    """The pretrained model (step 0), every unlearning run but a sequence's steps, and the retrained
    reference (sampled like the checkpoints, so that the report compares like with like)."""
    return ["pretrained", *(run.name for run in runs(PARAMS) if run.request is None),
            *(["retrained"] if PARAMS["experiment"]["retrain"] else [])]


def report_models():
    """The models of the report's tables: all but the steps of a sequence of requests."""
    return [model for model in MODELS if model not in SEQUENCE]


def prompt_files(wildcards):
    """The prompts file and the reference images it names: inputs of every job that reads it."""
    return {"prompts": EXTERNAL["prompts"][0],
            "references": [str(prompt.image) for prompt in PROMPT_LIST if prompt.image is not None]}


def run_generations(run):
    """The generations (forget and retain sets) of the prompt that ``run`` unlearns."""
    return f"prompts/{PROMPTS[Run.parse(run).image]}/generations.npz"


def prompt_outputs():
    """What a text-to-image experiment ends with: its report and each prompt's split."""
    return [*rules.report_prompts.output, *expand("prompts/{prompt}/generations.png", prompt=PROMPTS)]
