"""The names every stage agrees on: the unlearning runs of an experiment and its models.

A run is one method with one seed (and, in a sweep, one forget filter; with
``experiment.per_image``, one forget image). Its name is its model directory under models/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from pipeline.errors import UserError

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
    term's hard time window and low-pass radius (:mod:`pipeline.methods.filters`) and, with
    ``experiment.per_image``, the one forget image it unlearns (its position among the distinct
    forget images in row order, :func:`pipeline.data.sets.forget_of`). Its name is its model directory
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
