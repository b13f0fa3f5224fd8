"""An experiment's params: merged over the defaults, and validated in one place.

An experiment's params file (``params.yaml``) holds only what it changes; :func:`resolve` merges it
over ``defaults.yaml`` (beside this module), where every key has its default, and checks the
result against ``schema.yaml`` (types, ranges, unknown keys) and then the rules that involve
several keys (:func:`cross_checks`). Snakemake (rules/common.smk) and every stage's command line
call :func:`load_params`, so a bad value stops the run with one message naming the key before
anything is computed, whichever tool started it.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pipeline.errors import UserError
from pipeline.params.runs import COUNTED_STRATEGIES

DEFAULTS = Path(__file__).with_name("defaults.yaml")
TEXT_TO_IMAGE = Path(__file__).with_name("text_to_image.yaml")  # defaults of model.kind text_to_image
SCHEMA = Path(__file__).with_name("schema.yaml")


@functools.cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def defaults(kind: str = "ddpm") -> dict:
    """Every key with its default value (a fresh copy) for an experiment of ``model.kind`` ``kind``:
    a text-to-image one takes the reference codes' Stable Diffusion budgets (``text_to_image.yaml``)."""
    base = yaml.safe_load(DEFAULTS.read_text())
    return merged(base, yaml.safe_load(TEXT_TO_IMAGE.read_text())) if kind == "text_to_image" else base


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied: a mapping in both merges key by key, any other value of
    ``changes`` (a list, a number, null) replaces the one in ``base``. Neither is modified."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else copy.deepcopy(value)
    return out


def method_names() -> list[str]:
    """The methods params may name (``methods.<name>`` in the schema)."""
    return list(schema()["properties"]["methods"]["properties"])


def with_forget_filter(name: str) -> bool:
    """Whether method ``name`` has a forget term that ``time`` and ``frequency`` restrict."""
    return "time" in schema()["properties"]["methods"]["properties"][name]["properties"]


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    """One human sentence for a schema violation, naming the key and what was expected."""
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        where = f"in {key}" if error.absolute_path else "at the top level"
        return f"unknown key {unknown[0]!r} {where}; expected one of {allowed}"
    if error.validator == "required":
        return f"{key}: {error.message}"
    if error.validator == "enum":
        return f"{key}: got {error.instance!r}, expected one of {error.validator_value}"
    if error.validator == "type":
        return f"{key}: got {error.instance!r}, expected type {error.validator_value}"
    if error.validator == "oneOf":
        return f"{key}: got {error.instance!r}, which matches none of the allowed forms"
    return f"{key}: {error.message}"


def _first_error(params: dict) -> jsonschema.ValidationError | None:
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: (len(e.absolute_path), e.path))
    return jsonschema.exceptions.best_match(errors) if errors else None


# (training, test) images of the sources whose size params fix; a folder's is known only from its files
SOURCE_SIZES = {"mnist": (60000, 10000), "MNIST": (60000, 10000), "FashionMNIST": (60000, 10000),
                "KMNIST": (60000, 10000), "CIFAR10": (50000, 10000), "CIFAR100": (50000, 10000)}


def source_sizes(params: dict) -> tuple[int, int] | None:
    """(training, test) images of ``data.source`` when params fix them (None for a folder)."""
    source = params["data"]["source"]
    return None if source["kind"] == "folder" else SOURCE_SIZES.get(
        source["kind"] if source["kind"] == "mnist" else source.get("dataset") or "")


def base_bound(params: dict) -> int | None:
    """The most base images the training set can have, from params alone (None: only the data can
    tell, a folder without ``limit``)."""
    known = source_sizes(params)
    bounds = [b for b in (params["data"]["source"].get("limit"), known[0] if known else None) if b]
    return min(bounds) if bounds else None


def retain_bound(params: dict) -> int | None:
    """The most images the retain set can have, from params alone (None: only the data can tell):
    the base images and the injected copies, less the fewest rows the forget strategy can take."""
    base = base_bound(params)
    if base is None:
        return None
    forget, injected = params["forget"], sum(item["copies"] for item in params["data"]["inject"])
    if forget["strategy"] == "injected":
        return base
    fewest = {"indices": lambda: len(set(forget["indices"] or [])), "files": lambda: len(set(forget["files"] or [])),
              "random": lambda: forget["random"]["k"]}.get(forget["strategy"], lambda: 1)()
    return base + injected - fewest


def data_bound_checks(params: dict) -> list[str]:
    """The checks against the size of the data that params alone decide (docs/usage.md lists the
    ones that must wait for the data)."""
    problems = []
    heldout = params["data"]["heldout"]
    known = source_sizes(params)
    if known and heldout > known[1]:
        problems.append(f"data.heldout: {heldout} held-out images requested, but the test split has {known[1]}")
    retain = retain_bound(params)
    if retain is not None and params["knn"]["k"] > retain:
        problems.append(f"knn.k: {params['knn']['k']} neighbours asked for, but the retain set has at most {retain} "
                        "images (data.source.limit and the forget set)")
    base = base_bound(params)
    if params["forget"]["strategy"] == "random" and base is not None and params["forget"]["random"]["k"] >= base:
        problems.append(f"forget.random.k: {params['forget']['random']['k']} images asked for, but the training set "
                        f"has at most {base} base images and the retain set must keep one")
    return problems


def cross_checks(params: dict) -> list[str]:
    """The rules that involve several keys, on schema-valid params: a message per broken rule."""
    problems = []
    source = params["data"]["source"]
    if source["kind"] == "folder" and not source.get("path"):
        problems.append("data.source.path: required when data.source.kind is 'folder'")
    if params["model"]["source"] == "pretrained" and not params["model"].get("pretrained"):
        problems.append("model.pretrained: required (a Hub id or a local path) when model.source is 'pretrained'")
    unet = params["model"]["unet"]
    if len(unet["attention"]) != len(unet["block_out_channels"]):
        problems.append("model.unet.attention: needs one entry per model.unet.block_out_channels entry")
    if any(c % unet["norm_num_groups"] for c in unet["block_out_channels"]):
        problems.append("model.unet.norm_num_groups: must divide every model.unet.block_out_channels entry")
    forget = params["forget"]
    if forget["strategy"] == "label" and forget.get("label") is None:
        problems.append("forget.label: required when forget.strategy is 'label'")
    if forget["strategy"] == "indices" and not forget.get("indices"):
        problems.append("forget.indices: required when forget.strategy is 'indices'")
    if forget["strategy"] == "files" and not forget.get("files"):
        problems.append("forget.files: required when forget.strategy is 'files'")
    requests = params["experiment"]["requests"]
    if forget["strategy"] == "request" and not (forget["request"]["file"] or requests):
        problems.append("forget.request.file: required (a deletion request file) when forget.strategy is 'request'")
    if requests and forget["strategy"] != "request":
        problems.append(f"experiment.requests: needs forget.strategy 'request' (the forget set is the requests' "
                        f"union), not {forget['strategy']!r}")
    if requests and forget["request"]["file"]:
        problems.append("forget.request.file: must be null with experiment.requests, which names every request")
    if requests and params["experiment"].get("per_image"):
        problems.append("experiment.requests: a sequence of requests cannot be combined with experiment.per_image")
    if forget["strategy"] == "injected" and not params["data"]["inject"] and params["model"]["kind"] == "ddpm":
        problems.append("forget.strategy: 'injected' needs at least one image in data.inject")
    if params["knn"]["space"] != "pixels" and not params["knn"].get("encoder"):
        problems.append(f"knn.encoder: required when knn.space is '{params['knn']['space']}'")
    T = params["model"]["num_train_timesteps"]
    for name, cfg in params["methods"].items():
        window = (cfg.get("time") or {}).get("window")
        if window and not 0 <= window[0] <= window[1] < T:
            problems.append(f"methods.{name}.time.window: {window} must satisfy 0 <= t1 <= t2 < "
                            f"model.num_train_timesteps = {T}")
    if params["metrics"]["trajectory"]["samples"] > params["sampling"]["n"]:
        problems.append(f"metrics.trajectory.samples: {params['metrics']['trajectory']['samples']} must be at most "
                        f"sampling.n = {params['sampling']['n']} (a model's point is its first samples)")
    if params["metrics"]["probe"]["t"] >= T:
        problems.append(f"metrics.probe.t: {params['metrics']['probe']['t']} must be below "
                        f"model.num_train_timesteps = {T}")
    sweep = params["experiment"].get("sweep") or {}
    for name in sweep.get("methods", []):
        if name not in method_names() or not with_forget_filter(name):
            problems.append(f"experiment.sweep.methods: {name!r} has no forget term to filter; "
                            f"those with one: {[n for n in method_names() if with_forget_filter(n)]}")
    for window in sweep.get("windows", []):
        if window and not 0 <= window[0] <= window[1] < T:
            problems.append(f"experiment.sweep.windows: {window} must satisfy 0 <= t1 <= t2 < "
                            f"model.num_train_timesteps = {T}")
    experiment = params["experiment"]
    if experiment.get("per_image") and forget["strategy"] not in COUNTED_STRATEGIES:
        problems.append(f"experiment.per_image: needs a forget.strategy that fixes the forget images in params "
                        f"({', '.join(COUNTED_STRATEGIES)}), not {forget['strategy']!r}")
    if experiment.get("per_image") and experiment["retrain"]:
        problems.append("experiment.retrain: one retrained model per forget image is not supported; "
                        "set it false with experiment.per_image")
    for name in params["experiment"]["methods"]:
        if name not in method_names():
            problems.append(f"experiment.methods: unknown method {name!r}; known: {sorted(method_names())}")
    if params["model"]["kind"] == "text_to_image":  # no forget strategy, knn over generations
        return problems + text_to_image_checks(params)
    return problems + data_bound_checks(params)


def text_to_image_checks(params: dict) -> list[str]:
    """The rules of a text-to-image experiment (``model.kind: text_to_image``)."""
    cfg, experiment, problems = params["text_to_image"], params["experiment"], []
    if not cfg["prompts"]:
        problems.append("text_to_image.prompts: required (a JSONL file of memorized prompts) when model.kind is "
                        "'text_to_image'")
    if cfg["train"] == "full" and cfg["lora"]:
        problems.append("text_to_image.lora: LoRA settings given, but text_to_image.train is 'full' (every UNet "
                        "weight trains); set train: lora to train adapters, or remove lora")
    if cfg["train"] == "lora" and not cfg["lora"]:
        problems.append("text_to_image.lora: required ({rank, alpha}) when text_to_image.train is 'lora'")
    if cfg["split"]["space"] == "sscd" and not cfg["split"]["sscd"]:
        problems.append("text_to_image.split.sscd: required (a TorchScript SSCD model) when split.space is 'sscd'")
    unsupported = {"experiment.per_image": experiment["per_image"], "experiment.requests": experiment["requests"],
                   "experiment.sweep.methods": (experiment.get("sweep") or {}).get("methods"),
                   "experiment.retrain": experiment["retrain"]}
    problems += [f"{key}: not supported with model.kind 'text_to_image' (one run per prompt x method x seed; no "
                 "training set to retrain on); leave it at its default" for key, value in unsupported.items() if value]
    if params["knn"]["k"] >= cfg["generation"]["n"]:
        problems.append(f"knn.k: {params['knn']['k']} nearest retain latents asked for, but a prompt has only "
                        f"text_to_image.generation.n = {cfg['generation']['n']} generations, some of them memorized")
    captions = cfg["captions"]
    if params["model"]["source"] == "train" and len(captions["injected"]) != len(params["data"]["inject"]):
        problems.append(f"text_to_image.captions.injected: needs one label per data.inject entry "
                        f"({len(params['data']['inject'])}), found {len(captions['injected'])}")
    if any(label >= len(captions["labels"]) for label in captions["injected"]):
        problems.append(f"text_to_image.captions.injected: labels must be below the {len(captions['labels'])} "
                        "words of text_to_image.captions.labels")
    return problems


def validate(params: Any, source: str = "params.yaml") -> dict:
    """Return complete ``params`` (every key, as :func:`resolve` gives them) if they are a valid
    experiment, else raise UserError naming the key."""
    if not isinstance(params, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    error = _first_error(params)
    if error is not None:
        raise UserError(f"{source}: {_describe(error)}")
    problems = cross_checks(params)
    if problems:
        raise UserError(f"{source}: {problems[0]}")
    return params


def resolve(changes: Any, source: str = "params.yaml") -> dict:
    """The complete params of an experiment whose params file holds ``changes`` (module doc),
    validated; UserError naming the key and ``source`` if they are not a valid experiment."""
    if changes is None:
        changes = {}
    if not isinstance(changes, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(changes).__name__}")
    kind = (changes.get("model") or {}).get("kind") if isinstance(changes.get("model"), dict) else None
    return validate(merged(defaults(kind or "ddpm"), changes), source)


def read_changes(path: str | Path) -> Any:
    """The contents of a params file, as written (not yet merged or validated)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from exc


def load_params(path: str | Path = "params.yaml") -> dict:
    """The complete, validated params of the experiment whose params file is ``path``."""
    return resolve(read_changes(path), str(path))
