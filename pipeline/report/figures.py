"""The report's figures: forgetting against quality, samples, probes, steps and the sweep grid
(what each shows: :mod:`pipeline.report.tables`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.artifacts import atomic_path  # noqa: E402
from pipeline.diffusion.images import grid  # noqa: E402
from pipeline.params.runs import REFERENCE_MODELS  # noqa: E402
from pipeline.report.tables import image_index, model_method, ordered_methods


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
    fig.suptitle(f"Forget filter sweep, mean over {n_seeds} seed(s) (± std in table.md)\n"
                 "(none, none) is the method itself", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
