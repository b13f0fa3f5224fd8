"""Stage 8, report: one table of every model, and their samples side by side.

Outputs: ``table.csv`` (one row per model), ``table.md`` (the same rows, then each method's
mean +- std over seeds), and ``samples.png`` (the first 64 samples of every model, titled with
its forget-reproduction rate; all models share the same initial noise, so panels pair up).
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

from pipeline.artifacts import atomic_path, load_json, save_text, setup_logging  # noqa: E402
from pipeline.config import cli  # noqa: E402
from pipeline.images import grid  # noqa: E402
from pipeline.sampling import load_samples  # noqa: E402

COLUMNS = ["model", "method", "seed", "forget_reproduction_pct", "forget_reproduced", "n_samples", "quality_pca_fd"]


def row(metrics: dict) -> dict:
    name = metrics["model"]
    method, _, seed = name.rpartition("-s") if name not in ("pretrained", "retrained") else (name, "", "")
    rep = metrics["forget_reproduction"]
    return {"model": name, "method": method, "seed": seed,
            "forget_reproduction_pct": round(100 * rep["rate"], 2), "forget_reproduced": rep["count"],
            "n_samples": metrics["n_samples"], "quality_pca_fd": round(metrics["quality"]["value"], 3)}


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


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


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics JSON of every model")
    parser.add_argument("--samples", nargs="+", required=True, help="samples .npz of every model, same order")
    parser.add_argument("--out-dir", required=True)
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
    log.info("report of %d models written to %s", len(rows), out)


if __name__ == "__main__":
    main()
