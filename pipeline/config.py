"""params.yaml: loading, validation, and the names every stage agrees on.

Snakemake (the Snakefile) and every stage's command line call :func:`load_params`, so a bad
value stops the run with one message naming the key before anything is computed, whichever
tool started it.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any, Callable

import jsonschema
import yaml


class UserError(Exception):
    """Bad input from the user (params, files). Shown as one line, without a traceback."""


def _schema() -> dict:
    """params.schema.yaml, with one sub-schema per registered method under ``methods``."""
    from pipeline.methods import REGISTRY

    schema = yaml.safe_load(Path(__file__).with_name("params.schema.yaml").read_text())
    loop = schema["$defs"]["loop"]
    schema["properties"]["methods"].update(additionalProperties=False, properties={
        name: {"description": (cls.__doc__ or "").strip().splitlines()[0], "type": "object",
               "additionalProperties": False, "required": [*loop["required"], *cls.hyperparameters],
               "properties": {**loop["properties"], **cls.hyperparameters}}
        for name, cls in REGISTRY.items()})
    return schema


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
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: (len(e.absolute_path), e.path))
    return jsonschema.exceptions.best_match(errors) if errors else None


def _cross_checks(params: dict) -> list[str]:
    """Rules that involve several keys; each returns the message for the user."""
    from pipeline.methods import REGISTRY

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
    if forget["strategy"] == "injected" and not params["data"]["inject"]:
        problems.append("forget.strategy: 'injected' needs at least one image in data.inject")
    for name in params["experiment"]["methods"]:
        if name not in REGISTRY:
            problems.append(f"experiment.methods: unknown method {name!r}; known: {sorted(REGISTRY)}")
        elif name not in params["methods"]:
            problems.append(f"methods.{name}: missing; every method in experiment.methods needs its hyperparameters")
    return problems


def validate(params: Any, source: str = "params.yaml") -> dict:
    """Return ``params`` if it is a valid experiment, else raise UserError naming the key."""
    if not isinstance(params, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    error = _first_error(params)
    if error is not None:
        raise UserError(f"{source}: {_describe(error)}")
    problems = _cross_checks(params)
    if problems:
        raise UserError(f"{source}: {problems[0]}")
    return params


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and validate a params file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from exc
    return validate(params, str(path))


def run_name(method: str, seed: int) -> str:
    """Name of one unlearning run, also its model directory under models/."""
    return f"{method}-s{seed}"


def model_names(params: dict) -> list[str]:
    """Every model the experiment samples and scores: the pretrained one, the retrained one
    (when ``experiment.retrain``), then each unlearning run."""
    runs = [run_name(m, s) for m in params["experiment"]["methods"] for s in params["experiment"]["seeds"]]
    return ["pretrained", *(["retrained"] if params["experiment"]["retrain"] else []), *runs]


def stage_args(argv: list[str] | None, doc: str, *names: str, optional: tuple[str, ...] = (),
               types: dict | None = None) -> argparse.Namespace:
    """The command line of a stage: ``--params`` (the params file), one required option per
    name (its input and output paths, e.g. ``--data``, ``--out``), the ``optional`` ones, and
    ``--log`` (a log file)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", required=True, help="params.yaml")
    for name in (*names, *optional):
        parser.add_argument(f"--{name}", required=name in names, type=(types or {}).get(name, str))
    parser.add_argument("--log", help="log file, besides stderr")
    return parser.parse_args(argv)


def cli(main: Callable[..., None]) -> Callable[..., None]:
    """Wrap a stage's entry point: a UserError becomes one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
