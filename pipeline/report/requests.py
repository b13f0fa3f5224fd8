"""Deletion requests in sequence (``experiment.requests``): what each step did to every request.

Step k of a run (``retrack-s0-q<k>``, step 0 the pretrained model) has unlearned requests 1..k,
each from the previous step's model. After each step, for every request j (earlier, current and
later ones), the figures of its images: the share of samples reproducing one of them, their NLL
(bits/dim) and the probe's nSSCD (:func:`pipeline.report.tables.forget_image_figures`); and for the
model, the quality (FID) and the distance of its weights from the pretrained ones,
||theta_k - theta_0||_2 / ||theta_0||_2 over every parameter. A request j < k whose figures move
back toward step 0 is an earlier image coming back; a later one (j > k) shows what unlearning
one image does to another that is still asked to be kept.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.params.runs import Run  # noqa: E402
from pipeline.report.figures import save_figure  # noqa: E402
from pipeline.report.tables import fmt, forget_image_figures, markdown_table  # noqa: E402

matplotlib.use("Agg")

FIGURES = (("reproduction", "reproduction_pct", 100), ("nll_bits_per_dim", "nll_bits_per_dim", 1),
           ("nsscd", "probe_nsscd", 1))  # per-image figure, column, scale


def step_of(model: str) -> tuple[str, str, int]:
    """(method, seed, step) of the pretrained model (every method's step 0: "", "", 0) or a step."""
    if model == "pretrained":
        return "", "", 0
    run = Run.parse(model)
    return run.method, str(run.seed), run.request


def sequence_rows(metrics: list[dict], distances: dict[str, float], request_of: dict[int, int],
                  ids: list[str]) -> list[dict]:
    """One row per model and request: the mean over the request's images of each figure, and the
    model's FID and weight distance. ``request_of``: the request (index into ``ids``) of each
    distinct forget image, by row."""
    rows = []
    for m in metrics:
        method, seed, step = step_of(m["model"])
        per_image = forget_image_figures(m)
        for j, request in enumerate(ids):
            mine = [fig for row, fig in per_image.items() if request_of[row] == j]
            rows.append({"model": m["model"], "method": method, "seed": seed, "step": step, "request": request,
                         "status": "deleted" if j < step else "kept",
                         **{col: scale * float(np.mean([fig[key] for fig in mine])) for key, col, scale in FIGURES},
                         "fid": m["quality"]["fid"], "weight_distance": distances[m["model"]]})
    return rows


def methods_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows if r["method"]))


def mean_of(rows: list[dict], method: str, step: int, column: str, request: str | None = None) -> float:
    """Mean over seeds at ``step`` (step 0 is the pretrained model, shared by every method)."""
    mine = [r[column] for r in rows if r["step"] == step and (step == 0 or r["method"] == method)
            and (request is None or r["request"] == request)]
    return float(np.mean(mine))


def sequence_markdown(rows: list[dict], ids: list[str], seeds: int) -> str:
    """Per method and step, mean over seeds: each request's reproduction and NLL, FID, distance."""
    steps = sorted({r["step"] for r in rows})
    header = ["method", "after", *(f"{q}: reproduction (%) / NLL" for q in ids), "FID", "weight distance"]
    body = []
    for method in methods_of(rows):
        for step in steps:
            cells = []
            for j, q in enumerate(ids):
                mark = "deleted " if j < step else ""
                cells.append(f"{mark}{fmt(mean_of(rows, method, step, 'reproduction_pct', q), '.2f')} / "
                             f"{fmt(mean_of(rows, method, step, 'nll_bits_per_dim', q), '.2f')}")
            body.append([method, "pretrained" if step == 0 else f"{ids[step - 1]} (step {step})", *cells,
                         fmt(mean_of(rows, method, step, "fid"), ".3f"),
                         fmt(mean_of(rows, method, step, "weight_distance"), ".4f")])
    return (f"# Deletion requests in sequence\n\nEach step unlearns one request from the previous step's model; "
            f"mean over {seeds} seed(s). reproduction: share of samples reproducing one of the request's images; "
            "NLL: the images' bits/dim; weight distance: ||θ − θ_pretrained|| / ||θ_pretrained|| "
            "(pipeline/report/requests.py).\n\n" + markdown_table(header, body))


def sequence_figure(path: Path, rows: list[dict], ids: list[str]) -> None:
    """Over the steps, per method (mean over seeds): each request's reproduction, FID, distance."""
    steps = sorted({r["step"] for r in rows})
    labels = ["pretrained", *(f"after {q}" for q in ids)][:len(steps)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    colours, styles = plt.get_cmap("tab10"), ["-", "--", ":", "-."]
    for i, method in enumerate(methods_of(rows)):
        for j, q in enumerate(ids):
            axes[0].plot(steps, [mean_of(rows, method, s, "reproduction_pct", q) for s in steps], marker="o",
                         color=colours(i % 10), linestyle=styles[j % 4], label=f"{method}: {q}'s images")
        for ax, column in zip(axes[1:], ("fid", "weight_distance")):
            ax.plot(steps, [mean_of(rows, method, s, column) for s in steps], marker="o", color=colours(i % 10),
                    label=method)
    titles = ("forget reproduction (% of samples) per request", "FID (lower is better)",
              "weight distance from the pretrained model")
    for ax, title in zip(axes, titles):
        ax.set_xticks(steps, labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Deletion requests in sequence: each step unlearns one request from the previous model",
                 fontsize=11)
    save_figure(fig, path)
