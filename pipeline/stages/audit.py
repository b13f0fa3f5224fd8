"""Stage audit: the verdict on the deletion request, PASS or FAIL per model, with what it judged
(:mod:`pipeline.report.audit`): ``report/audit.json`` and ``report/audit.md``.

The request is the experiment's forget set: with ``forget.strategy: request`` the request file's
id and date, otherwise the strategy's name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.artifacts import load_json, save_json, save_text, setup_logging
from pipeline.data.requests import read_request
from pipeline.data.sets import load_forget_set
from pipeline.params.validation import load_params
from pipeline.report.audit import WEIGHTS, audit, code_digest, params_digest, sha256_file, to_markdown
from pipeline.stages.command import cli


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", required=True)
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics JSON of every model")
    parser.add_argument("--models", nargs="+", required=True, help="the model directories, same order")
    parser.add_argument("--data", required=True)
    parser.add_argument("--forget", required=True)
    parser.add_argument("--out", required=True, help="audit.json")
    parser.add_argument("--md", required=True, help="audit.md")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    log = setup_logging(args.log)
    metrics = [load_json(path) for path in args.metrics]
    weights = {m["model"]: sha256_file(Path(d) / WEIGHTS) for m, d in zip(metrics, args.models)}
    forget = params["forget"]
    named = read_request(forget["request"]["file"]) if forget["strategy"] == "request" else \
        {"id": f"forget.strategy {forget['strategy']}", "date": "–"}
    chosen = load_forget_set(args.forget)
    request = {"id": named["id"], "date": named["date"], "images": len(chosen["distinct"]), "rows": len(chosen["rows"])}
    digests = {"params": params_digest(params), "data": sha256_file(args.data),
               "code": code_digest(Path(__file__).resolve().parents[1])}
    result = audit(metrics, weights, request, digests, params["audit"])
    save_json(args.out, result)
    save_text(args.md, to_markdown(result))
    verdicts = ", ".join(f"{m['model']} {m['verdict']}" for m in result["models"])
    log.info("audit of request %s: %s", request["id"], verdicts)


if __name__ == "__main__":
    main()
