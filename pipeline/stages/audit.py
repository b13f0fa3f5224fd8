"""Stage audit: the verdict on the deletion request, PASS or FAIL per model, with what it judged
(:mod:`pipeline.report.audit`): ``report/audit.json`` and ``report/audit.md``.

The request is the experiment's forget set: with ``forget.strategy: request`` the request file's
id and date (with ``experiment.requests``, each request's, judged one by one), otherwise the
strategy's name. ``--metrics`` and ``--models``: every model's, in the same order; ``--out``:
audit.json, ``--md``: audit.md.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import load_json, save_json, save_text, setup_logging
from pipeline.data.requests import read_request
from pipeline.data.sets import load_forget_set, requests_by_row
from pipeline.params.validation import load_params
from pipeline.report.audit import WEIGHTS, audit, code_digest, params_digest, sha256_file, to_markdown
from pipeline.stages.command import cli, stage_args


def asked(params: dict) -> list[dict]:
    """The requests (id, date) in order; without a request file, the forget strategy stands for one."""
    forget = params["forget"]
    if forget["strategy"] != "request":
        return [{"id": f"forget.strategy {forget['strategy']}", "date": "–"}]
    return [read_request(path) for path in params["experiment"]["requests"] or [forget["request"]["file"]]]


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "data", "forget", "out", "md", many=("metrics", "models"))
    params = load_params(args.params)
    log = setup_logging(args.log)
    metrics = [load_json(path) for path in args.metrics]
    weights = {m["model"]: sha256_file(Path(d) / WEIGHTS) for m, d in zip(metrics, args.models)}
    chosen = load_forget_set(args.forget)
    requests = [{"id": q["id"], "date": q["date"], "images": int((chosen["request"] == k).sum()),
                 "rows": int((chosen["request"][chosen["group"]] == k).sum())} for k, q in enumerate(asked(params))]
    digests = {"params": params_digest(params), "data": sha256_file(args.data),
               "code": code_digest(Path(__file__).resolve().parents[1])}
    result = audit(metrics, weights, requests, requests_by_row(chosen), digests, params["audit"])
    save_json(args.out, result)
    save_text(args.md, to_markdown(result))
    verdicts = ", ".join(f"{m['model']} {m['verdict']}" for m in result["models"])
    log.info("audit of %s: %s", ", ".join(q["id"] for q in requests), verdicts)


if __name__ == "__main__":
    main()
