"""The params keys each stage reads: what Snakemake (a rule's ``params``) and DVC (a stage's
``params``) compare to decide that a job must run again.

A rule tracks exactly the keys its stage reads, so that an edit reruns what it can change and
nothing else (``metrics.trajectory.deleted_rate`` only reruns the report). Where a stage reads a
key only for one kind of experiment (a folder source, a forget strategy), the key that selects
that kind is tracked too. Three keys are read but never tracked, because they change how a stage
runs, not what it computes (at most the last bits of floating-point results):
``compute.resume_every``, ``compute.channels_last`` and ``compute.compile``.
"""

from __future__ import annotations

from typing import Callable

from pipeline.params.runs import Run

MODEL_SHAPE = ("data.resolution", "data.channels")  # the UNet must match the data
SAMPLER = ("sampling.steps", "sampling.batch_size", "sampling.seed", "compute.precision")
ATTACK = ("steps", "batch_size", "lr", "betas", "weight_decay", "eps", "seed", "samples")  # not kinds: one per job
SAMPLE_FIGURES = ("metrics.threshold", "metrics.memorization", "metrics.quality")


def _data(params: dict, wildcards: dict) -> list[str]:
    # a folder's held-out draw never takes a file that forget.files names
    folder = params["data"]["source"]["kind"] == "folder"
    return ["data", *(["forget.strategy", "forget.files"] if folder else [])]


def _pretrain(params: dict, wildcards: dict) -> list[str]:
    if params["model"]["source"] == "pretrained":
        return ["model.source", "model.pretrained", *MODEL_SHAPE]
    return ["model.source", *_retrain(params, wildcards)]


def _retrain(params: dict, wildcards: dict) -> list[str]:
    return ["model.unet", "model.num_train_timesteps", "pretrain", "compute.precision", *MODEL_SHAPE]


def _forget_set(params: dict, wildcards: dict) -> list[str]:
    strategy = params["forget"]["strategy"]
    own = {"injected": [], "label": ["forget.label"], "indices": ["forget.indices"], "files": ["forget.files"],
           "memorized": ["forget.memorized", "compute.precision"],
           "request": ["forget.request", "experiment.requests"]}.get(strategy, [f"forget.{strategy}"])
    return ["forget.strategy", *own]


def _unlearn(params: dict, wildcards: dict) -> list[str]:
    return [f"methods.{Run.parse(wildcards['run']).method}", "compute.precision"]


def _pretrain_text_to_image(params: dict, wildcards: dict) -> list[str]:
    if params["model"]["source"] == "pretrained":
        return ["model.kind", "model.source", "model.pretrained"]
    return ["model.kind", "model.source", "data.seed", "text_to_image.captions", "text_to_image.model",
            "text_to_image.pretrain", "compute.precision"]


TEXT_TO_IMAGE_EVALUATION = ("text_to_image.evaluation", "text_to_image.split", "compute.precision")

STAGE_KEYS: dict[str, Callable[[dict, dict], list[str]]] = {
    "data": _data,
    "pretrain": _pretrain,
    "retrain": _retrain,
    "forget_set": _forget_set,
    "knn": lambda params, wildcards: ["knn"],
    "unlearn": _unlearn,
    "sample": lambda params, wildcards: ["sampling.n", *SAMPLER],
    "classifier": lambda params, wildcards: ["metrics.classifier"],
    "metrics": lambda params, wildcards: [*SAMPLE_FIGURES, "metrics.nll", "metrics.probe", "metrics.copy_detection",
                                          "metrics.membership"],
    "trajectory": lambda params, wildcards: [*SAMPLER, "metrics.trajectory.samples", *SAMPLE_FIGURES],
    "diagnostics": lambda params, wildcards: ["diagnostics"],
    "attack": lambda params, wildcards: [*SAMPLER, *(f"attack.{k}" for k in ATTACK), "metrics.threshold",
                                         "metrics.nll", "metrics.probe"],
    "audit": lambda params, wildcards: ["audit", "forget.strategy", "forget.request.file", "experiment.requests"],
    "requests": lambda params, wildcards: ["experiment.requests", "experiment.seeds"],
    "pretrain_text_to_image": _pretrain_text_to_image,
    "generate": lambda params, wildcards: ["text_to_image.generation", "text_to_image.split", "compute.precision"],
    "unlearn_prompt": lambda params, wildcards: [*_unlearn(params, wildcards), "knn.k", "text_to_image.train",
                                                 "text_to_image.lora", "text_to_image.gradient_checkpointing"],
    "evaluate_prompt": lambda params, wildcards: list(TEXT_TO_IMAGE_EVALUATION),
    "evaluate_pretrained": lambda params, wildcards: list(TEXT_TO_IMAGE_EVALUATION),
    "report_prompts": lambda params, wildcards: ["text_to_image.evaluation"],
    "report": lambda params, wildcards: ["experiment.seeds", "experiment.per_image", "experiment.sweep",
                                         "metrics.memorization.ratio", "metrics.probe.t", "metrics.probe.draws",
                                         "metrics.trajectory"],
}


def stage_keys(rule: str, params: dict, wildcards: dict | None = None) -> list[str]:
    """The keys (``section.key``) that the job of ``rule`` with ``wildcards`` reads; none for a
    rule that reads no params (fetch_mnist)."""
    keys = STAGE_KEYS.get(rule)
    return keys(params, wildcards or {}) if keys else []


def lookup(params: dict, key: str):
    """The value of ``key`` (``section.sub.key``) in ``params``."""
    value = params
    for part in key.split("."):
        value = value[part]
    return value
