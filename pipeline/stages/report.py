"""Stage report: every model's metrics as tables and figures a reader can take in at a glance.

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
- ``sweep.png`` with an ``experiment.sweep``: heat maps over the forget filter's grid.
- ``resurgence.csv``, and a section of table.md: each relearning attack's figures before and
  after it (:mod:`pipeline.evaluation.attacks`), per method.

The deletion step of a run: the first evaluated step from which its forget reproduction stays at
or below ``metrics.trajectory.deleted_rate`` (its trajectory starts at the pretrained model's).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.artifacts import load_json, load_npz, save_json, save_text, setup_logging, to_csv  # noqa: E402
from pipeline.data.sets import load_forget_set, load_training_set  # noqa: E402
from pipeline.diffusion.images import (
    load_samples,  # noqa: E402
    to_float,  # noqa: E402
)
from pipeline.params.runs import REFERENCE_MODELS  # noqa: E402
from pipeline.params.validation import load_params  # noqa: E402
from pipeline.report.figures import pareto_figure, probe_figure, samples_figure, steps_figure, sweep_figure
from pipeline.report.tables import (
    deletion_step,
    image_index,
    is_main,
    method_rows_csv,
    model_method,
    model_rank,
    notes,
    read_trajectory,
    resurgence_markdown,
    resurgence_rows,
    row,
    summary,
    sweep_grids,
    to_markdown,
)
from pipeline.stages.command import cli  # noqa: E402


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", required=True)
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics JSON of every model")
    parser.add_argument("--probes", nargs="+", required=True, help="probe .npz of every model, same order")
    parser.add_argument("--samples", nargs="+", required=True, help="samples .npz of every model, same order")
    parser.add_argument("--trajectories", nargs="+", required=True, help="trajectory CSVs (pretrained, runs)")
    parser.add_argument("--attacks", nargs="*", default=[], help="relearning attacks (attacks/<model>/<kind>.json)")
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
    resurgence = resurgence_rows({m["model"]: m for m in metrics}, [load_json(p) for p in args.attacks])
    save_text(out / "resurgence.csv", to_csv(resurgence))
    markdown = to_markdown(rows, table, notes(metrics[0], params), over) + resurgence_markdown(resurgence)
    save_text(out / "table.md", markdown)
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
