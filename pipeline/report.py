"""Stage 8, report: one table of every model, and their samples side by side.

Outputs: ``table.csv`` (one row per model), ``table.md`` (the same rows, then each method's
mean +- std over seeds), and ``samples.png`` (the first 64 samples of every model, titled with
its forget-reproduction rate; all models share the same initial noise, so panels pair up).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.artifacts import atomic_path, load_json, save_text, setup_logging, to_csv  # noqa: E402
from pipeline.config import Run, cli, load_params  # noqa: E402
from pipeline.images import grid  # noqa: E402
from pipeline.sampling import load_samples  # noqa: E402


def row(metrics: dict) -> dict:
    name = metrics["model"]
    method, _, seed = name.rpartition("-s") if name not in ("pretrained", "retrained") else (name, "", "")
    rep = metrics["forget_reproduction"]
    return {"model": name, "method": method, "seed": seed,
            "forget_reproduction_pct": round(100 * rep["rate"], 2), "forget_reproduced": rep["count"],
            "n_samples": metrics["n_samples"], "quality_pca_fd": round(metrics["quality"]["value"], 3)}


def markdown_table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def mean_std(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f} (n={len(v)})"


def to_markdown(rows: list[dict], threshold: str) -> str:
    per_model = markdown_table(
        ["model", "forget reproduction (%)", "reproduced / samples", "quality: PCA-FD ↓"],
        [[r["model"], r["forget_reproduction_pct"], f"{r['forget_reproduced']} / {r['n_samples']}", r["quality_pca_fd"]]
         for r in rows])
    methods = list(dict.fromkeys(r["method"] for r in rows))
    summary = markdown_table(["method", "forget reproduction (%)", "quality: PCA-FD ↓"],
                             [[m, mean_std([r["forget_reproduction_pct"] for r in rows if r["method"] == m]),
                               mean_std([r["quality_pca_fd"] for r in rows if r["method"] == m])] for m in methods])
    return (f"# Unlearning report\n\n## Every model\n\n{per_model}\n## Per method, mean ± std over seeds\n\n{summary}\n"
            "pretrained: the model before unlearning. retrained: the same recipe trained from scratch on the "
            "retain set only, the reference that unlearning should approach.\n"
            f"Forget reproduction: share of samples within the threshold of a forget image ({threshold}).\n"
            "Quality: Frechet distance to retain images in PCA space (lower is better), forget reproductions "
            "excluded.\n")


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


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
                    cells["quality"][i, j] = np.mean([r["quality_pca_fd"] for r in mine])
        grids[method] = cells
    return grids


def sweep_figure(path: Path, grids: dict, sweep: dict, n_seeds: int) -> None:
    """Heat maps of forgetting and quality over the (time window x radius) grid, one row per method."""
    windows = ["none" if w is None else f"[{w[0]}, {w[1]}]" for w in sweep["windows"]]
    radii = ["none" if r is None else f"r = {r:g}" for r in sweep["radii"]]
    fig, axes = plt.subplots(len(grids), 2, figsize=(4 + 1.1 * len(radii) * 2, 1.2 + 0.9 * len(windows) * len(grids)),
                             squeeze=False, layout="constrained")
    titles = {"forget": "forget reproduction (%) ↓", "quality": "quality: PCA-FD ↓"}
    for row, (method, cells) in zip(axes, grids.items()):
        for ax, key in zip(row, ("forget", "quality")):
            low, high = np.nanmin(cells[key]), np.nanmax(cells[key])
            image = ax.imshow(cells[key], cmap="viridis_r", aspect="auto", vmin=low, vmax=max(high, low + 1e-3))
            for (i, j), value in np.ndenumerate(cells[key]):
                ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value > np.nanmean(cells[key]) else "black")
            ax.set_xticks(range(len(radii)), radii, fontsize=8)
            ax.set_yticks(range(len(windows)), windows, fontsize=8)
            ax.set_xlabel("frequency selection: low-pass radius of the forget residual", fontsize=8)
            ax.set_ylabel("time window of the forget term", fontsize=8)
            ax.set_title(f"{method}: {titles[key]}", fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"Time/frequency selection sweep, mean over {n_seeds} seed(s) (± std in table.md); "
                 "(none, none) is the method itself",
                 fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics JSON of every model")
    parser.add_argument("--samples", nargs="+", required=True, help="samples .npz of every model, same order")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--params", help="params.yaml: with an experiment.sweep, also report/sweep.png")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    log = setup_logging(args.log)
    metrics = [load_json(p) for p in args.metrics]
    rows = [row(m) for m in metrics]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_text(out / "table.csv", to_csv(rows))
    save_text(out / "table.md", to_markdown(rows, metrics[0]["forget_reproduction"]["threshold"]["derivation"]))
    panels = [(f"{r['model']}: {r['forget_reproduction_pct']} % forget", load_samples(p))
              for r, p in zip(rows, args.samples)]
    samples_figure(out / "samples.png", panels)
    sweep = load_params(args.params)["experiment"].get("sweep") if args.params else None
    if sweep and sweep["methods"]:
        grids = sweep_grids(rows, sweep)
        sweep_figure(out / "sweep.png", grids, sweep, len(load_params(args.params)["experiment"]["seeds"]))
    log.info("report of %d models written to %s", len(rows), out)


if __name__ == "__main__":
    main()
