"""The report's tables: a row of figures per model, per method their mean ± std over its runs
(sample std), the deletion step of a run, and the resurgence under relearning attacks. What each
output holds: :mod:`pipeline.stages.report`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib
import numpy as np  # noqa: E402

from pipeline.artifacts import to_csv  # noqa: E402
from pipeline.params.runs import REFERENCE_MODELS, Run  # noqa: E402

matplotlib.use("Agg")


# (column, header, format): the figures of a row, in table order; ↓/↑: which way is better.
COLUMNS = [
    ("forget_reproduction_pct", "forget reproduction (%) ↓", ".2f"),
    ("nn_memorization_pct", "NN memorization (%) ↓", ".2f"),
    ("nll_bits_per_dim", "forget NLL (bits/dim) ↑", ".2f"),
    ("probe_pixel_l2", "probe L2 at t=250 ↑", ".2f"),
    ("probe_similarity", "probe similarity ↓", ".3f"),
    ("probe_nsscd", "probe nSSCD ↓", ".3f"),
    ("membership_auc", "MIA AUC", ".3f"),
    ("fid", "FID ↓", ".3f"),
    ("is_mean", "IS ↑", ".2f"),
    ("deletion_step", "deletion step", ".0f"),
    ("wall_time_s", "time (s)", ".1f"),
    ("peak_rss_mib", "peak memory (MiB)", ".0f"),
]


def model_method(name: str) -> tuple[str, str]:
    """(method, seed) of a model name: retrack-s3 and retrack-s3-i2 -> (retrack, 3);
    pretrained -> (pretrained, "")."""
    if name in REFERENCE_MODELS:
        return name, ""
    run = Run.parse(name)
    return run.variant, str(run.seed)


def image_index(name: str, i: int) -> int | None:
    """Where forget image ``i`` is in the probe of model ``name``: ``i`` for a model judged on the
    whole forget set, 0 for the per-image run of image ``i``, None for another image's run."""
    image = None if name in REFERENCE_MODELS else Run.parse(name).image
    return i if image is None else (0 if image == i else None)


def row(metrics: dict, deletion_step: int | None = None) -> dict:
    """The figures of one model, flat."""
    method, seed = model_method(metrics["model"])
    rep, quality = metrics["forget_reproduction"], metrics["quality"]
    return {"model": metrics["model"], "method": method, "seed": seed,
            "forget_reproduction_pct": 100 * rep["rate"], "forget_reproduced": rep["count"],
            "n_samples": metrics["n_samples"], "nn_memorization_pct": 100 * metrics["nn_memorization"]["rate"],
            "nll_bits_per_dim": metrics["nll"]["bits_per_dim"], "nll_nfe": metrics["nll"]["nfe"],
            "probe_pixel_l2": metrics["probe"]["pixel_l2"], "probe_similarity": metrics["probe"]["similarity"],
            "probe_nsscd": metrics["probe"]["nsscd"], "membership_auc": metrics["membership"]["auc"],
            "fid": quality["fid"], "is_mean": quality.get("is_mean"), "deletion_step": deletion_step,
            **{k: metrics["cost"][k] for k in ("wall_time_s", "steps", "peak_rss_mib")}}


def model_rank(name: str) -> int:
    """Order of the report: the pretrained model first, the runs, the retrained reference last."""
    return {"pretrained": 0, "retrained": 2}.get(name, 1)


def is_main(name: str) -> bool:
    """A reference model, or a run of experiment.methods (not a cell of the time/frequency sweep)."""
    if name in REFERENCE_MODELS:
        return True
    run = Run.parse(name)
    return run.window is None and run.radius is None


def deletion_step(points: list[dict], rate: float) -> int | None:
    """The first step from which forget reproduction stays <= rate (None: it does not)."""
    points = sorted(points, key=lambda p: p["step"])
    step = None
    for p in points:
        if p["forget_reproduction_pct"] / 100 <= rate:
            step = p["step"] if step is None else step
        else:
            step = None
    return step


def stats(values: list) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def ordered_methods(rows: list[dict]) -> list[str]:
    """pretrained first, retrained last, the methods in between in the order they came."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    middle = [m for m in methods if m not in REFERENCE_MODELS]
    return [m for m in ("pretrained",) if m in methods] + middle + [m for m in ("retrained",) if m in methods]


def summary(rows: list[dict]) -> dict:
    """Per method, each figure's mean, std (sample std over its runs) and n."""
    return {m: {col: stats([r[col] for r in rows if r["method"] == m]) for col, _, _ in COLUMNS}
            for m in ordered_methods(rows)}


def fmt(value, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def mean_std(s: dict, spec: str) -> str:
    if s["n"] == 0:
        return "–"
    return fmt(s["mean"], spec) if s["n"] == 1 else f"{fmt(s['mean'], spec)} ± {fmt(s['std'], spec)}"


def markdown_table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def method_label(method: str) -> str:
    return {"pretrained": "pretrained (start)", "retrained": "**retrained (reference)**"}.get(method, method)


def to_markdown(rows: list[dict], table: dict, notes: list[str], over: str) -> str:
    header = [h for _, h, _ in COLUMNS]
    per_method = markdown_table(["method", "runs", *header],
                                [[method_label(m), cells["forget_reproduction_pct"]["n"],
                                  *(mean_std(cells[c], spec) for c, _, spec in COLUMNS)] for m, cells in table.items()])
    per_model = markdown_table(["model", *header], [[r["model"], *(fmt(r[c], spec) for c, _, spec in COLUMNS)]
                                                    for r in rows])
    legend = "\n".join(f"- {n}" for n in notes)
    return (f"# Unlearning report\n\n## Per method, mean ± std over {over}\n\n{per_method}\n{legend}\n\n"
            f"## Every model\n\n{per_model}")


RESURGENCE = (("reproduction", "forget reproduction (%)", 100, ".2f"),  # figure, header, scale, format
              ("nll_bits_per_dim", "forget NLL (bits/dim)", 1, ".2f"), ("probe_pixel_l2", "probe L2", 1, ".3f"))


def forget_image_figures(metrics: dict) -> dict[int, dict]:
    """Per forget image (by row) of a metrics JSON: the share of samples reproducing it, its NLL,
    and the probe's pixel L2 and nSSCD."""
    n = metrics["n_samples"]
    out = {p["row"]: {"reproduction": p["reproduced"] / n} for p in metrics["forget_reproduction"]["per_image"]}
    for p in metrics["per_image"]:
        out[p["row"]].update(nll_bits_per_dim=p["nll_bits_per_dim"], probe_pixel_l2=p.get("probe_pixel_l2"),
                             nsscd=p.get("nsscd"))
    return out


def model_forget_figures(metrics: dict) -> dict:
    """A model's own forget-set figures, as a relearning attack measures them after it: the mean
    over forget images of the share of samples reproducing each, its NLL, the probe's pixel L2."""
    images = forget_image_figures(metrics).values()
    return {key: float(np.mean([image[key] for image in images]))
            for key in ("reproduction", "nll_bits_per_dim", "probe_pixel_l2")}


def resurgence_rows(metrics: dict[str, dict], attacks: list[dict]) -> list[dict]:
    """One row per attack: the model's forget figures before it (its metrics) and after it."""
    rows = []
    for a in attacks:
        before = model_forget_figures(metrics[a["model"]])
        rows.append({"model": a["model"], "method": model_method(a["model"])[0], "attack": a["kind"],
                     "steps": a["steps"], **{f"{k}_before": before[k] for k, *_ in RESURGENCE},
                     **{f"{k}_after": a[k] for k, *_ in RESURGENCE}})
    return rows


def resurgence_markdown(rows: list[dict]) -> str:
    """Per method and attack, the mean over runs of each figure before -> after the attack."""
    if not rows:
        return ""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["attack"]), []).append(r)
    body = [[method_label(method), attack, len(group),
             *(f"{scale * np.mean([r[k + '_before'] for r in group]):{spec}} → "
               f"{scale * np.mean([r[k + '_after'] for r in group]):{spec}}" for k, _, scale, spec in RESURGENCE)]
            for (method, attack), group in sorted(groups.items(), key=lambda g: (g[0][0] == "retrained", g[0]))]
    steps = rows[0]["steps"]
    return (f"\n## Relearning attacks: before → after {steps} steps of fine-tuning\n\n"
            + markdown_table(["method", "attack", "runs", *(h for _, h, _, _ in RESURGENCE)], body)
            + "\nretain: fine-tuned on the retain set; neighbours: on the forget images' nearest retain images "
              "(pipeline/evaluation/attacks.py). A model that forgot should stay where the retrained one goes.\n")


def notes(metrics: dict, params: dict) -> list[str]:
    """What each column means, from the metrics themselves (threshold, embedding, features)."""
    m = params["metrics"]
    return [
        "pretrained: the model before unlearning. retrained: trained from scratch on the retain set, "
        "the reference that unlearning should approach.",
        f"forget reproduction: share of samples within the threshold of a forget image "
        f"({metrics['forget_reproduction']['threshold']['derivation']}).",
        f"NN memorization: share of samples whose nearest distinct training image is a forget image, "
        f"at d1 < {m['memorization']['ratio']} x d2.",
        f"forget NLL: probability-flow ODE, bits/dim (+7 offset); NFE {metrics['nll']['nfe']} for "
        f"{metrics['model']}.",
        f"probe: each forget image noised to t = {m['probe']['t']} and denoised by the model, "
        f"{m['probe']['draws']} draws; L2 in [0, 1] pixels; similarity and nSSCD in the embedding "
        f"{metrics['probe']['embedding']} (nSSCD, pipeline/evaluation/copydetect.py: 1 = a copy, or no plausible "
        "replacement; lower = replaced by a plausible image unlike the forget image).",
        "MIA AUC: loss-based membership attack, forget images against held-out images; compare with "
        "the retrained row.",
        f"FID / IS: {metrics['quality']['description']}.",
        f"deletion step: first unlearning step from which forget reproduction stays <= "
        f"{100 * m['trajectory']['deleted_rate']:g} % ({m['trajectory']['samples']} samples per checkpoint).",
        "time, memory: the wall time and peak resident memory of the job that trained or unlearned the model.",
    ]


def method_rows_csv(table: dict) -> str:
    return to_csv([{"method": m, "runs": cells["forget_reproduction_pct"]["n"],
                    **{f"{c}_{k}": cells[c][k] for c, _, _ in COLUMNS for k in ("mean", "std")}}
                   for m, cells in table.items()])


def sweep_grids(rows: list[dict], sweep: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per swept method, forgetting (%) and quality as (windows x radii) grids of the mean over
    seeds (NaN where a cell has no run)."""
    windows = [tuple(w) if w else None for w in sweep["windows"]]
    grids = {}
    for method in sweep["methods"]:
        cells = {k: np.full((len(windows), len(sweep["radii"])), np.nan) for k in ("forget", "quality")}
        for i, window in enumerate(windows):
            for j, radius in enumerate(sweep["radii"]):
                name = Run(method, 0, window, radius).name.rsplit("-s", 1)[0]
                mine = [r for r in rows if r["model"].rsplit("-s", 1)[0] == name]
                if mine:
                    cells["forget"][i, j] = np.mean([r["forget_reproduction_pct"] for r in mine])
                    cells["quality"][i, j] = np.mean([r["fid"] for r in mine])
        grids[method] = cells
    return grids


def read_trajectory(path: str) -> list[dict]:
    return [{k: float(v) if k != "step" else int(v) for k, v in r.items()}
            for r in csv.DictReader(io.StringIO(Path(path).read_text()))]
