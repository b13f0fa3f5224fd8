"""Stage requests: the report on a sequence of deletion requests (``experiment.requests``), each
unlearned from the previous request's model (:mod:`pipeline.report.requests` states the figures):
``report/requests.csv`` (a row per model and request), ``report/requests.md`` (per method and step,
the mean over seeds, and the relearning attacks on the last step: each figure before and after)
and ``report/requests.png`` (the figures over the steps). ``--metrics`` and ``--models``: the
pretrained model's and every step's, in the same order; ``--attacks``: the attacks on the last
steps (``attacks/<model>/<kind>.json``).
"""

from __future__ import annotations

from pipeline.artifacts import load_json, save_text, setup_logging, to_csv
from pipeline.data.requests import read_request
from pipeline.data.sets import load_forget_set, requests_by_row
from pipeline.diffusion.models import load_model, weight_distance
from pipeline.params.validation import load_params
from pipeline.report.requests import sequence_figure, sequence_markdown, sequence_rows
from pipeline.report.tables import resurgence_markdown, resurgence_rows
from pipeline.stages.command import cli, stage_args


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "forget", "csv", "md", "png", many=("metrics", "models", "attacks"))
    params = load_params(args.params)
    log = setup_logging(args.log)
    metrics = [load_json(path) for path in args.metrics]
    models = {m["model"]: path for m, path in zip(metrics, args.models)}
    start, _ = load_model(models["pretrained"])
    distances = {name: weight_distance(load_model(path)[0], start) for name, path in models.items()}
    request_of = requests_by_row(load_forget_set(args.forget))
    ids = [read_request(path)["id"] for path in params["experiment"]["requests"]]
    rows = sequence_rows(metrics, distances, request_of, ids)
    save_text(args.csv, to_csv(rows))
    attacks = resurgence_rows({m["model"]: m for m in metrics}, [load_json(path) for path in args.attacks])
    save_text(args.md, sequence_markdown(rows, ids, len(params["experiment"]["seeds"]))
              + resurgence_markdown(attacks))
    sequence_figure(args.png, rows, ids)
    log.info("%d requests in sequence, %d models: report written to %s", len(ids), len(metrics), args.md)


if __name__ == "__main__":
    main()
