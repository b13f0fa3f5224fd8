"""Stage 9, report: every model's metrics as tables and figures a reader can take in at a glance.

- ``table.md`` / ``table.csv``: one row per method, mean ± std over its runs (sample std over
  seeds and, with ``experiment.per_image``, forget images; the pretrained row is judged on every
  forget image at once, so its reproduction counts samples close to any of them), with the
  pretrained model as the starting row and the retrained model as the reference row; table.md also
  lists every model. ``models.csv``: every model. ``summary.json``: per method, each figure's mean,
  std and n (DVC metrics).
- ``pareto.png`` (+ ``pareto.csv``, a DVC plot): forgetting against quality, a point per method
  and seed, the mean marked with its ± std.
- ``samples.png``: the first 64 samples of the reference models and of each method's run with
  the first seed (per-image runs: forget image 0's), all from the same initial noise.
- ``probe.png``: each forget image, its noised version at t = 250 and its reconstruction by every
  model. ``steps.png`` (+ ``steps.csv``): forget reproduction and FID over the unlearning steps.
- ``sweep.png`` with an ``experiment.sweep``: heat maps over the time/frequency grid.

The deletion step of a run: the first evaluated step from which its forget reproduction stays at
or below ``metrics.trajectory.deleted_rate`` (its trajectory starts at the pretrained model's).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.artifacts import atomic_path, load_json, load_npz, save_json, save_text, setup_logging, to_csv  # noqa: E402
from pipeline.config import REFERENCE_MODELS, Run, cli, load_params  # noqa: E402
from pipeline.data import load_forget_set, load_training_set  # noqa: E402
from pipeline.images import grid, to_float  # noqa: E402
from pipeline.sampling import load_samples  # noqa: E402

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
        f"{metrics['probe']['embedding']} (nSSCD, pipeline/copydetect.py: 1 = a copy, or no plausible "
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


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def pareto_figure(path: Path, rows: list[dict], fid_name: str) -> None:
    """Forget reproduction (x) against FID (y): a point per model, each method's mean ± std."""
    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    colours = plt.get_cmap("tab10")
    for i, method in enumerate(ordered_methods(rows)):
        mine = [r for r in rows if r["method"] == method]
        x = np.array([r["forget_reproduction_pct"] for r in mine])
        y = np.array([r["fid"] for r in mine])
        colour = "black" if method in REFERENCE_MODELS else colours(i % 10)
        marker = {"pretrained": "s", "retrained": "*"}.get(method, "o")
        ax.scatter(x, y, color=colour, alpha=0.45, s=22, marker=marker)
        ax.errorbar(x.mean(), y.mean(), xerr=x.std(ddof=1) if len(x) > 1 else None,
                    yerr=y.std(ddof=1) if len(y) > 1 else None, color=colour, marker=marker, markersize=10,
                    markeredgecolor="white", capsize=3, linestyle="none", label=f"{method} (n={len(mine)})")
    x_max = max([r["forget_reproduction_pct"] for r in rows] + [0.1])
    ax.set_xlim(-0.04 * x_max, 1.06 * x_max)  # a share: nothing below 0
    ax.set_xlabel("forget reproduction (% of samples) — less is more forgetting")
    ax.set_ylabel(f"{fid_name} — lower is better")
    ax.set_title("Forgetting against sample quality: small markers are runs, large ones the mean ± std\n"
                 "(best: bottom left, near the retrained reference)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)


def samples_figure(path: Path, panels: list[tuple[str, np.ndarray]]) -> None:
    cols = min(4, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, samples) in zip(axes.flat, panels):
        image = grid(samples[:64], ncols=8)
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(title, fontsize=9)
    fig.suptitle("First 64 samples of each model (same initial noise)", fontsize=11)
    save_figure(fig, path)


def show(ax, image: np.ndarray, title: str) -> None:
    """One (C, H, W) [0, 1] image on an axis without ticks."""
    ax.imshow(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def probe_figure(path: Path, originals: np.ndarray, probes: list[tuple[dict, dict]], t: int) -> None:
    """Each forget image (row), its noised version at t (the first model's) and, per method, the
    reconstruction (first draw) by the model that was judged on that image (:func:`image_index`),
    titled with that image's pixel L2 and nSSCD under the model."""
    n = min(len(originals), 4)
    methods = list(dict.fromkeys(model_method(m["model"])[0] for m, _ in probes))
    fig, axes = plt.subplots(n, 2 + len(methods), figsize=(max(6.0, 1.45 * (2 + len(methods))), 1.7 * n + 0.7),
                             squeeze=False, layout="constrained")
    noised = probes[0][1]["noised"]
    for i in range(n):
        show(axes[i, 0], originals[i], "forget image")
        show(axes[i, 1], np.clip(noised[i, 0], 0, 1), f"noised, t = {t}")
        for ax in axes[i, 2:]:
            ax.axis("off")
        for metrics, images in probes:
            k = image_index(metrics["model"], i)
            if k is None:
                continue
            image = metrics["per_image"][k]
            ax = axes[i, 2 + methods.index(model_method(metrics["model"])[0])]
            ax.axis("on")
            show(ax, images["reconstructions"][k, 0],
                 f"{metrics['model']}\nL2 {image['probe_pixel_l2']:.2f}, nSSCD {image['nsscd']:.2f}")
    fig.suptitle(f"Memorization probe: each forget image noised to t = {t} and denoised by each model (first draw)\n"
                 "titles: L2 distance to the forget image in [0, 1] pixels; nSSCD (1 = a copy)", fontsize=9)
    save_figure(fig, path)


def steps_figure(path: Path, trajectories: dict[str, list[dict]], methods: list[str], n_samples: int) -> None:
    """Forget reproduction and FID over the unlearning steps: per method the mean over runs
    (band: min-max), from the pretrained model at step 0; the retrained model, evaluated the same
    way, as a dashed line."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    colours = plt.get_cmap("tab10")
    start = trajectories.get("pretrained", [])
    retrained = trajectories.get("retrained", [None])[0]
    for i, method in enumerate(methods):
        runs = [start + pts for name, pts in trajectories.items()
                if name not in REFERENCE_MODELS and model_method(name)[0] == method]
        if not runs:
            continue
        steps = sorted({p["step"] for run in runs for p in run})
        for ax, key in zip(axes, ("forget_reproduction_pct", "fid")):
            values = np.array([[next((p[key] for p in run if p["step"] == s), np.nan) for s in steps] for run in runs])
            ax.plot(steps, np.nanmean(values, axis=0), marker="o", markersize=3, color=colours(i % 10),
                    label=f"{method} (n={len(runs)})")
            if len(runs) > 1:
                ax.fill_between(steps, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=colours(i % 10),
                                alpha=0.15)
    for ax, key, label in zip(axes, ("forget_reproduction_pct", "fid"),
                              ("forget reproduction (% of samples)", "FID (lower is better)")):
        if retrained is not None:
            ax.axhline(retrained[key], color="black", linestyle="--", linewidth=1, label="retrained (reference)")
        ax.set_xlabel("unlearning step (0 = pretrained model)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Forgetting and quality over the unlearning steps: mean over runs (band: min to max), "
                 f"{n_samples} samples per point\n(FID depends on the number of samples: compare the points "
                 "here with each other, not with table.md)", fontsize=10)
    save_figure(fig, path)


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


def sweep_figure(path: Path, grids: dict, sweep: dict, n_seeds: int) -> None:
    """Heat maps of forgetting and quality over the (time window x radius) grid, one row per method."""
    windows = ["none" if w is None else f"[{w[0]}, {w[1]}]" for w in sweep["windows"]]
    radii = ["none" if r is None else f"r = {r:g}" for r in sweep["radii"]]
    size = (max(9.0, 4 + 2.2 * len(radii)), 1.4 + 0.9 * len(windows) * len(grids))
    fig, axes = plt.subplots(len(grids), 2, figsize=size, squeeze=False, layout="constrained")
    titles = {"forget": "forget reproduction (%) ↓", "quality": "quality: FID ↓"}
    for row, (method, cells) in zip(axes, grids.items()):
        for ax, key in zip(row, ("forget", "quality")):
            low, high = np.nanmin(cells[key]), np.nanmax(cells[key])
            image = ax.imshow(cells[key], cmap="viridis_r", aspect="auto", vmin=low, vmax=max(high, low + 1e-3))
            for (i, j), value in np.ndenumerate(cells[key]):
                ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value > np.nanmean(cells[key]) else "black")
            ax.set_xticks(range(len(radii)), radii, fontsize=8)
            ax.set_yticks(range(len(windows)), windows, fontsize=8)
            ax.set_xlabel("low-pass radius of the forget residual", fontsize=8)
            ax.set_ylabel("time window of the forget term", fontsize=8)
            ax.set_title(f"{method}: {titles[key]}", fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"Time/frequency selection sweep, mean over {n_seeds} seed(s) (± std in table.md)\n"
                 "(none, none) is the method itself",
                 fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def read_trajectory(path: str) -> list[dict]:
    return [{k: float(v) if k != "step" else int(v) for k, v in r.items()}
            for r in csv.DictReader(io.StringIO(Path(path).read_text()))]


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", required=True)
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics JSON of every model")
    parser.add_argument("--probes", nargs="+", required=True, help="probe .npz of every model, same order")
    parser.add_argument("--samples", nargs="+", required=True, help="samples .npz of every model, same order")
    parser.add_argument("--trajectories", nargs="+", required=True, help="trajectory CSVs (pretrained, runs)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--forget", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    log = setup_logging(args.log)
    params = load_params(args.params)
    order = sorted(range(len(args.metrics)), key=lambda i: model_rank(Path(args.metrics[i]).stem))
    metrics = [load_json(args.metrics[i]) for i in order]
    args.samples, args.probes = [args.samples[i] for i in order], [args.probes[i] for i in order]
    trajectories = {Path(p).stem: read_trajectory(p) for p in args.trajectories}
    rate = params["metrics"]["trajectory"]["deleted_rate"]
    start = trajectories.get("pretrained", [])
    rows = [row(m, deletion_step(start + trajectories[m["model"]], rate)
                if m["model"] in trajectories and m["model"] not in REFERENCE_MODELS else None) for m in metrics]
    table = summary(rows)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_text(out / "models.csv", to_csv(rows))
    save_text(out / "table.csv", method_rows_csv(table))
    over = "seeds and forget images" if params["experiment"].get("per_image") else "seeds"
    save_text(out / "table.md", to_markdown(rows, table, notes(metrics[0], params), over))
    save_json(out / "summary.json", table)
    save_text(out / "pareto.csv", to_csv([{k: r[k] for k in ("model", "method", "forget_reproduction_pct", "fid")}
                                          for r in rows]))
    pareto_figure(out / "pareto.png", rows, metrics[0]["quality"]["features"] + " FID")
    first_seed = params["experiment"]["seeds"][0]
    shown = [is_main(m["model"]) and model_method(m["model"])[1] in ("", str(first_seed)) for m in metrics]
    samples_figure(out / "samples.png", [(f"{r['model']}: {r['forget_reproduction_pct']:.1f} % forget",
                                          load_samples(p)) for r, p, s in zip(rows, args.samples, shown)
                                         if s and image_index(r["model"], 0) is not None])
    probes = [(m, load_npz(p, ("noised", "reconstructions"))) for m, p, s in zip(metrics, args.probes, shown) if s]
    forget = load_forget_set(args.forget)
    originals = to_float(load_training_set(args.data)["images"][forget["distinct"]])
    probe_figure(out / "probe.png", originals, probes, params["metrics"]["probe"]["t"])
    steps = [{"model": name, "method": model_method(name)[0], **p} for name, pts in trajectories.items() for p in pts]
    save_text(out / "steps.csv", to_csv(steps))
    main_methods = list(dict.fromkeys(model_method(m["model"])[0] for m in metrics
                                      if is_main(m["model"]) and m["model"] not in REFERENCE_MODELS))
    steps_figure(out / "steps.png", trajectories, main_methods, params["metrics"]["trajectory"]["samples"])
    sweep = params["experiment"].get("sweep")
    if sweep and sweep["methods"]:
        sweep_figure(out / "sweep.png", sweep_grids(rows, sweep), sweep, len(params["experiment"]["seeds"]))
    log.info("report of %d models written to %s", len(rows), out)


if __name__ == "__main__":
    main()
