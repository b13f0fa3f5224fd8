"""The report of a text-to-image experiment: per run (method x seed x prompt) and per method,
averaged over prompts and seeds, as the SISS and ReTrack papers report memorized prompts.

A run's row compares the starting model and the unlearned one on the run's prompt: the memorized
share of the caption's and the modified prompt's fresh generations before and after, their
similarity to a memorized generation, whether the prompt is mitigated (no generation memorized)
and from which step, the quality score, the control prompts' similarity to what they gave before,
and the run's wall time and peak memory. A method's row averages them; its ``mitigated`` is the
share of prompts mitigated, the SISS paper's headline figure.
"""

from __future__ import annotations

import numpy as np

from pipeline.diffusion.images import save_labelled_grid, to_float
from pipeline.report.figures import save_figure
from pipeline.report.tables import markdown_table, method_label

VARIANTS = ("caption", "modified")


def run_row(pretrained: dict, record: dict) -> dict:
    """One run's row (module doc) from its evaluation record and the starting model's."""
    run, prompt = record["run"], record["run"]["prompt"]
    before, after = pretrained["prompts"][prompt], record["prompts"][prompt]
    quality = "clip_score" if "clip_score" in after["caption"] else "plausibility"
    row = {"run": record["model"], "method": run["method"], "seed": run["seed"], "prompt": prompt,
           "forget_generations": run["forget_generations"], "retain_generations": run["retain_generations"]}
    for variant in VARIANTS:
        row[f"{variant}_memorized_before"] = before[variant]["memorized_share"]
        row[f"{variant}_memorized_after"] = after[variant]["memorized_share"]
        row[f"{variant}_similarity_after"] = after[variant]["similarity_mean"]
        row[f"{variant}_copy_share_before"] = before[variant]["copy_share"]
        row[f"{variant}_copy_share_after"] = after[variant]["copy_share"]
        row[f"{variant}_mitigated"] = after[variant]["mitigated"]
    controls = list((record.get("controls") or {}).values())
    row.update({"first_mitigated_step": after["first_mitigated_step"],
                f"{quality}_before": before["caption"][quality], f"{quality}_after": after["caption"][quality],
                "control_similarity": float(np.mean(controls)) if controls else None,
                "wall_time_s": record["cost"]["wall_time_s"], "peak_rss_mib": record["cost"]["peak_rss_mib"],
                "peak_cuda_mib": record["cost"]["peak_cuda_mib"]})
    return row


def method_rows(rows: list[dict]) -> list[dict]:
    """Per method (in the order of first appearance), the mean of every figure of its runs over
    prompts and seeds; the ``_mitigated`` means are the shares of prompts mitigated. The first
    mitigated step is the median over the runs that are mitigated (None if none is)."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        runs = [r for r in rows if r["method"] == method]
        summary = {"method": method, "runs": len(runs), "prompts": len({r["prompt"] for r in runs})}
        for key, value in runs[0].items():
            if key in ("run", "method", "seed", "prompt", "first_mitigated_step") or isinstance(value, str):
                continue
            values = [r[key] for r in runs if r[key] is not None]
            summary[key] = float(np.mean(values)) if values else None
        steps = [r["first_mitigated_step"] for r in runs if r["first_mitigated_step"] is not None]
        summary["first_mitigated_step_median"] = float(np.median(steps)) if steps else None
        out.append(summary)
    return out


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(methods: list[dict], rows: list[dict], notes: list[str]) -> str:
    """The report's tables: per method, then per run."""
    quality = "clip_score" if "clip_score_after" in rows[0] else "plausibility"
    header = ["method", "prompts", "mitigated (caption)", "mitigated (modified)",
              "memorized before → after (caption)",
              "memorized before → after (modified)", "first mitigated step", f"{quality} before → after",
              "control similarity", "time (s)", "peak RSS (MiB)"]
    body = [[method_label(m["method"]), m["prompts"], _pct(m["caption_mitigated"]), _pct(m["modified_mitigated"]),
             f"{_pct(m['caption_memorized_before'])} → {_pct(m['caption_memorized_after'])}",
             f"{_pct(m['modified_memorized_before'])} → {_pct(m['modified_memorized_after'])}",
             _num(m["first_mitigated_step_median"], "g"),
             f"{_num(m[f'{quality}_before'], '.3f')} → {_num(m[f'{quality}_after'], '.3f')}",
             _num(m["control_similarity"], ".3f"), _num(m["wall_time_s"], ".1f"), _num(m["peak_rss_mib"], ".0f")]
            for m in methods]
    per_run = [[r["run"], r["prompt"],
                f"{_pct(r['caption_memorized_before'])} → {_pct(r['caption_memorized_after'])}",
                f"{_pct(r['modified_memorized_before'])} → {_pct(r['modified_memorized_after'])}",
                f"{_pct(r['caption_copy_share_before'])} → {_pct(r['caption_copy_share_after'])}",
                _num(r["caption_similarity_after"], ".3f"), _num(r["first_mitigated_step"], "d"),
                _num(r["control_similarity"], ".3f"), _num(r["wall_time_s"], ".1f")] for r in rows]
    return "\n\n".join([
        "# Memorized prompts: unlearning report",
        "Per method, averaged over prompts and seeds (mitigated: the share of prompts none of whose fresh "
        "generations the prompt's classifier calls memorized).",
        markdown_table(header, body),
        "Per run (copies: the share of generations at least `copy_threshold` similar to one of the starting "
        "model's memorized generations).",
        markdown_table(["run", "prompt", "memorized (caption)", "memorized (modified)", "copies (caption)",
                        "similarity to A (caption)",
                        "first mitigated step", "control similarity", "time (s)"], per_run),
        *notes]) + "\n"


def figure(path, methods: list[dict]) -> None:
    """The memorized share of the caption's and the modified prompt's generations, before and after, per method."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.6 + 1.1 * len(methods), 3.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    x = np.arange(len(methods))
    for ax, variant in zip(axes, VARIANTS):
        ax.bar(x - 0.2, [100 * m[f"{variant}_memorized_before"] for m in methods], 0.4, label="before", color="0.6")
        ax.bar(x + 0.2, [100 * m[f"{variant}_memorized_after"] for m in methods], 0.4, label="after", color="C0")
        ax.set_xticks(x, [method_label(m["method"]) for m in methods], rotation=30, fontsize=8)
        ax.set_title(f"{variant} prompt", fontsize=9)
    axes[0].set_ylabel("memorized generations (%)")
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


SHOWN = 12  # generations per row of the generations figure


def generations_figure(path, records: list[dict], samples: list[dict[str, np.ndarray]]) -> None:
    """Per prompt, a row of the caption's first fresh generations by the starting model
    (``records[0]``) and one by each method's first run on that prompt."""
    rows, labels = [], []
    for prompt in records[0]["prompts"]:
        firsts = {}
        for record, images in zip(records, samples):
            method = record["run"]["method"] if "run" in record else "pretrained"
            if prompt in images and method not in firsts:
                firsts[method] = images[prompt][:SHOWN]
        for method, images in firsts.items():
            rows.append(np.concatenate([to_float(images), np.zeros((SHOWN - len(images), *images.shape[1:]))]))
            labels.append(f"{prompt}: {method}")
    save_labelled_grid(path, np.concatenate(rows), SHOWN, labels, "fresh generations of each caption",
                       "the same seeds in every row")
