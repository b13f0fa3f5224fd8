"""Stage report_prompts: the text-to-image experiment's report (:mod:`pipeline.report.prompts`).

Reads every model's evaluation (``--metrics``: the starting model's first, then each run's) and
writes ``--out`` (report/prompts.md: per method, averaged over prompts and seeds, then per run),
``--csv`` (one row per run), ``--summary`` (per method, JSON: DVC metrics), ``--png`` (the
memorized share before and after, per method) and ``--generations`` (each prompt's fresh
generations by the starting model and by each method's first run on it, from ``--samples``).
"""

from __future__ import annotations

from pipeline.artifacts import load_json, load_npz, save_json, save_text, setup_logging, to_csv
from pipeline.errors import UserError
from pipeline.params.validation import load_params
from pipeline.report.prompts import figure, generations_figure, markdown, method_rows, run_row
from pipeline.stages.command import cli, stage_args


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "out", "csv", "summary", "png", "generations", many=("metrics", "samples"))
    params = load_params(args.params)
    log = setup_logging(args.log)
    records = [load_json(path) for path in args.metrics]
    if records[0]["model"] != "pretrained":
        raise UserError(f"--metrics: the starting model's evaluation comes first, found {records[0]['model']!r}")
    rows = [run_row(records[0], record) for record in records[1:]]
    methods = method_rows(rows)
    cfg = params["text_to_image"]["evaluation"]
    other_seed = list(records[0].get("controls_other_seed", {}).values())
    notes = [f"Fresh generations: {cfg['n']} per prompt and variant, {cfg['scheduler']} with {cfg['steps']} steps, "
             f"guidance {cfg['guidance']}, seed {cfg['seed']}. Similarities: cosine on {records[0]['embedding']}. "
             f"Quality: {records[0]['quality']}. Control similarity: mean similarity of the control prompts' "
             "generations to the starting model's, pair by pair (same seed); 1 means unchanged"
             + (f", {sum(other_seed) / len(other_seed):.3f} is the starting model's between seeds (another image of "
                "the same prompt)." if other_seed else ".")]
    save_text(args.out, markdown(methods, rows, notes))
    save_text(args.csv, to_csv(rows))
    save_json(args.summary, {m["method"]: m for m in methods})
    figure(args.png, methods)
    generations_figure(args.generations, records, [load_npz(path, tuple(r["prompts"])) for path, r in
                                                   zip(args.samples, records)])
    log.info("report of %d runs, %d methods", len(rows), len(methods))


if __name__ == "__main__":
    main()
