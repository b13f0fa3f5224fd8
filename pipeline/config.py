"""params.yaml: loading, validation, and the names every stage agrees on.

Snakemake (the Snakefile) and every stage's command line call :func:`load_params`, so a bad
value stops the run with one message naming the key before anything is computed, whichever
tool started it.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import jsonschema
import numpy as np
import yaml


class UserError(Exception):
    """Bad input from the user (params, files). Shown as one line, without a traceback."""


def _schema() -> dict:
    """params.schema.yaml, with one sub-schema per registered method under ``methods``."""
    from pipeline.methods import REGISTRY
    from pipeline.selection import SCHEMA as SELECTION

    schema = yaml.safe_load(Path(__file__).with_name("params.schema.yaml").read_text())
    loop = schema["$defs"]["loop"]
    schema["properties"]["methods"].update(additionalProperties=False, properties={
        name: {"description": (cls.__doc__ or "").strip().splitlines()[0], "type": "object",
               "additionalProperties": False, "required": [*loop["required"], *cls.hyperparameters],
               "properties": {**loop["properties"], **cls.hyperparameters,
                              **(SELECTION if getattr(cls, "selectable", False) else {})}}
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
    if forget["strategy"] == "files" and not forget.get("files"):
        problems.append("forget.files: required when forget.strategy is 'files'")
    if forget["strategy"] in ("random", "memorized", "duplicated") and not forget.get(forget["strategy"]):
        problems.append(f"forget.{forget['strategy']}: required when forget.strategy is '{forget['strategy']}'")
    if forget["strategy"] == "injected" and not params["data"]["inject"]:
        problems.append("forget.strategy: 'injected' needs at least one image in data.inject")
    if params["knn"]["space"] != "pixels" and not params["knn"].get("encoder"):
        problems.append(f"knn.encoder: required when knn.space is '{params['knn']['space']}'")
    T = params["model"]["num_train_timesteps"]
    for name, cfg in params["methods"].items():
        window = (cfg.get("time") or {}).get("window")
        if window and not 0 <= window[0] <= window[1] < T:
            problems.append(f"methods.{name}.time.window: {window} must satisfy 0 <= t1 <= t2 < "
                            f"model.num_train_timesteps = {T}")
    if params["metrics"]["probe"]["t"] >= T:
        problems.append(f"metrics.probe.t: {params['metrics']['probe']['t']} must be below "
                        f"model.num_train_timesteps = {T}")
    sweep = params["experiment"].get("sweep") or {}
    for name in sweep.get("methods", []):
        if not getattr(REGISTRY.get(name), "selectable", False):
            problems.append(f"experiment.sweep.methods: {name!r} has no forget term to select; "
                            f"selectable: {sorted(n for n, c in REGISTRY.items() if getattr(c, 'selectable', False))}")
        elif name not in params["methods"]:
            problems.append(f"methods.{name}: missing; the sweep of experiment.sweep.methods needs its hyperparameters")
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
        if name not in REGISTRY:
            problems.append(f"experiment.methods: unknown method {name!r}; known: {sorted(REGISTRY)}")
        elif name not in params["methods"]:
            problems.append(f"methods.{name}: missing; every method in experiment.methods needs its hyperparameters")
    return problems


def external_files(params: dict) -> dict[str, list[str]]:
    """The files an experiment reads that no stage writes, by what they are: the image folder
    (``base``), forget images injected from files, the encoder of a latent or embedding k-NN
    space, the SSCD model and the Inception weights, each when params name one. The rules declare
    them as inputs, so that a missing one stops the run before any job starts."""
    data, metrics = params["data"], params["metrics"]
    return {
        "base": [data["source"]["path"]] if data["source"]["kind"] == "folder" else [],
        "forget_images": [item["image"] for item in data["inject"]
                          if item["image"] != "tshirt" and not item["image"].startswith("torchvision:")],
        "encoder": [params["knn"]["encoder"]] if params["knn"]["space"] != "pixels" else [],
        "sscd": [metrics["copy_detection"]["sscd"]] if metrics["copy_detection"].get("sscd") else [],
        "inception": [metrics["quality"]["inception_weights"]] if metrics["quality"].get("inception_weights") else [],
    }


def needs_classifier(params: dict) -> bool:
    """The digit classifier gives the quality features, or the copy-detection fallback."""
    metrics = params["metrics"]
    return metrics["quality"]["features"] == "classifier" or not metrics["copy_detection"].get("sscd")


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


RUN_PATTERN = r"[a-z_]+(\+t\d+-\d+)?(\+r\d+(\.\d+)?)?-s\d+(-i\d+)?"
_RUN = re.compile(r"(?P<method>[a-z_]+)(\+t(?P<t1>\d+)-(?P<t2>\d+))?(\+r(?P<radius>\d+(\.\d+)?))?-s(?P<seed>\d+)"
                  r"(-i(?P<image>\d+))?")
# the models that are not unlearning runs: the starting point and the gold standard
REFERENCE_MODELS = ("pretrained", "retrained")
# forget.strategy values whose number of forget images the params fix (experiment.per_image needs it)
COUNTED_STRATEGIES = ("injected", "indices", "files", "random")


@dataclass(frozen=True)
class Run:
    """One unlearning run: a method, a seed, for a cell of the time/frequency sweep the forget
    term's hard time window and low-pass radius (:mod:`pipeline.selection`) and, with
    ``experiment.per_image``, the one forget image it unlearns (its position among the distinct
    forget images in row order, :func:`pipeline.forget.one_image`). Its name is its model directory
    under models/: ``retrack-s0``, ``retrack+t250-750+r4-s0``, ``retrack-s0-i3``."""

    method: str
    seed: int
    window: tuple[int, int] | None = None
    radius: float | None = None
    image: int | None = None

    @property
    def name(self) -> str:
        window = f"+t{self.window[0]}-{self.window[1]}" if self.window else ""
        radius = f"+r{np.format_float_positional(self.radius, trim='-')}" if self.radius is not None else ""
        image = f"-i{self.image}" if self.image is not None else ""
        return f"{self.method}{window}{radius}-s{self.seed}{image}"

    @property
    def variant(self) -> str:
        """The name without seed and image: what the report averages over (``retrack+t250-750``)."""
        return self.name.rsplit("-s", 1)[0]

    @classmethod
    def parse(cls, name: str) -> "Run":
        match = _RUN.fullmatch(name)
        if not match:
            raise UserError(f"{name!r} is not a run name (method[+t<t1>-<t2>][+r<radius>]-s<seed>[-i<image>])")
        window = (int(match["t1"]), int(match["t2"])) if match["t1"] else None
        radius = float(match["radius"]) if match["radius"] else None
        image = int(match["image"]) if match["image"] else None
        return cls(match["method"], int(match["seed"]), window, radius, image)

    def hyperparameters(self, params: dict) -> dict:
        """``methods.<method>``; a sweep cell replaces its ``time`` and ``frequency``."""
        cfg = dict(params["methods"][self.method])
        if self.window or self.radius is not None:
            cfg["time"] = {"window": list(self.window), "soft": None} if self.window else None
            cfg["frequency"] = {"radius": self.radius, "radius_at_T": None} if self.radius is not None else None
        return cfg


def forget_count(params: dict) -> int:
    """How many forget images ``forget`` names, for the strategies that fix it in params
    (``COUNTED_STRATEGIES``); identical images would merge into one, which the stages check."""
    cfg = params["forget"]
    return {"injected": lambda: len(params["data"]["inject"]), "indices": lambda: len(set(cfg["indices"])),
            "files": lambda: len(set(cfg["files"])), "random": lambda: cfg["random"]["k"]}[cfg["strategy"]]()


def runs(params: dict) -> list[Run]:
    """The unlearning runs: every method x seed of ``experiment``, then every cell of
    ``experiment.sweep`` (methods x windows x radii x seeds; the cell without window and radius is
    the method's own run); with ``experiment.per_image``, each of them once per forget image."""
    seeds = params["experiment"]["seeds"]
    out = [Run(m, s) for m in params["experiment"]["methods"] for s in seeds]
    sweep = params["experiment"].get("sweep") or {}
    for method in sweep.get("methods", []):
        for window in sweep["windows"]:
            for radius in sweep["radii"]:
                out += [Run(method, s, tuple(window) if window else None, radius) for s in seeds]
    if params["experiment"].get("per_image"):
        out = [replace(run, image=i) for run in out for i in range(forget_count(params))]
    return list(dict.fromkeys(out))


def model_names(params: dict) -> list[str]:
    """Every model the experiment samples and scores: the pretrained one, the retrained one
    (when ``experiment.retrain``), then each unlearning run."""
    return ["pretrained", *(["retrained"] if params["experiment"]["retrain"] else []), *(r.name for r in runs(params))]


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
