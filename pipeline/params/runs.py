"""The names every stage agrees on: the unlearning runs of an experiment and its models.

A run is one method with one seed (and, in a sweep, one forget filter; with
``experiment.per_image``, one forget image; with ``experiment.requests``, one step of the sequence
of deletion requests). Its name is its model directory under models/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from pipeline.errors import UserError

RUN_PATTERN = r"[a-z_]+(\+t\d+-\d+)?(\+r\d+(\.\d+)?)?-s\d+(-i\d+)?(-q\d+)?"


_RUN = re.compile(r"(?P<method>[a-z_]+)(\+t(?P<t1>\d+)-(?P<t2>\d+))?(\+r(?P<radius>\d+(\.\d+)?))?-s(?P<seed>\d+)"
                  r"(-i(?P<image>\d+))?(-q(?P<request>\d+))?")


# the models that are not unlearning runs: the starting point and the gold standard
REFERENCE_MODELS = ("pretrained", "retrained")


# forget.strategy values whose number of forget images the params fix (experiment.per_image needs it)
COUNTED_STRATEGIES = ("injected", "indices", "files", "random")


@dataclass(frozen=True)
class Run:
    """One unlearning run: a method, a seed, for a cell of the time/frequency sweep the forget
    term's hard time window and low-pass radius (:mod:`pipeline.methods.filters`) and, with
    ``experiment.per_image``, the one forget image it unlearns (its position among the distinct
    forget images in row order, :func:`pipeline.data.sets.forget_of`; with ``model.kind:
    text_to_image``, the prompt it unlearns, its position in the prompts file, :func:`prompt_runs`) and, with
    ``experiment.requests``, the request it unlearns (1 for the first), starting from the model of
    the run of the request before it (:attr:`previous`). Its name is its model directory under
    models/: ``retrack-s0``, ``retrack+t250-750+r4-s0``, ``retrack-s0-i3``, ``retrack-s0-q2``."""

    method: str
    seed: int
    window: tuple[int, int] | None = None
    radius: float | None = None
    image: int | None = None
    request: int | None = None

    @property
    def name(self) -> str:
        window = f"+t{self.window[0]}-{self.window[1]}" if self.window else ""
        radius = f"+r{np.format_float_positional(self.radius, trim='-')}" if self.radius is not None else ""
        image = f"-i{self.image}" if self.image is not None else ""
        request = f"-q{self.request}" if self.request is not None else ""
        return f"{self.method}{window}{radius}-s{self.seed}{image}{request}"

    @property
    def variant(self) -> str:
        """The name without seed and image: what the report averages over (``retrack+t250-750``,
        ``retrack-q2``)."""
        request = f"-q{self.request}" if self.request is not None else ""
        return replace(self, seed=0, image=None, request=None).name.rsplit("-s", 1)[0] + request

    @property
    def previous(self) -> str:
        """The model this run starts from: the previous request's run, or the pretrained model."""
        return replace(self, request=self.request - 1).name if self.request and self.request > 1 else "pretrained"

    @classmethod
    def parse(cls, name: str) -> "Run":
        match = _RUN.fullmatch(name)
        if not match:
            raise UserError(f"{name!r} is not a run name (method[+t<t1>-<t2>][+r<radius>]-s<seed>[-i<image>])")
        window = (int(match["t1"]), int(match["t2"])) if match["t1"] else None
        radius = float(match["radius"]) if match["radius"] else None
        image = int(match["image"]) if match["image"] else None
        request = int(match["request"]) if match["request"] else None
        return cls(match["method"], int(match["seed"]), window, radius, image, request)

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
    the method's own run); with ``experiment.per_image``, each of them once per forget image; then,
    with ``experiment.requests``, every method x seed once per request (:func:`sequence_runs`)."""
    seeds = params["experiment"]["seeds"]
    out = [Run(m, s) for m in params["experiment"]["methods"] for s in seeds]
    sweep = params["experiment"].get("sweep") or {}
    for method in sweep.get("methods", []):
        for window in sweep["windows"]:
            for radius in sweep["radii"]:
                out += [Run(method, s, tuple(window) if window else None, radius) for s in seeds]
    if params["experiment"].get("per_image"):
        out = [replace(run, image=i) for run in out for i in range(forget_count(params))]
    return list(dict.fromkeys(out + sequence_runs(params)))


def sequence_runs(params: dict) -> list[Run]:
    """Every method x seed of ``experiment`` once per request of ``experiment.requests``, in order:
    ``retrack-s0-q1`` unlearns the first request from the pretrained model, ``retrack-s0-q2`` the
    second from ``retrack-s0-q1``'s model, and so on."""
    experiment = params["experiment"]
    return [Run(m, s, request=k) for m in experiment["methods"] for s in experiment["seeds"]
            for k in range(1, len(experiment["requests"]) + 1)]


def model_names(params: dict) -> list[str]:
    """Every model the experiment samples and scores: the pretrained one, the retrained one
    (when ``experiment.retrain``), then each unlearning run."""
    return ["pretrained", *(["retrained"] if params["experiment"]["retrain"] else []), *(r.name for r in runs(params))]


def prompt_runs(params: dict, prompts: int) -> list[Run]:
    """The runs of a text-to-image experiment with ``prompts`` memorized prompts: every method x
    seed once per prompt, which it unlearns alone (``siss-s0-i2``: the third prompt of the file)."""
    experiment = params["experiment"]
    return [Run(m, s, image=i) for m in experiment["methods"] for s in experiment["seeds"] for i in range(prompts)]
