"""Stage params (DVC only): every key of the experiment's params, for the other stages to track.

An experiment's params.yaml holds only what it changes. DVC compares the values of the keys a
stage tracks in a params file, and a key left at its default is not in params.yaml, so this stage
writes the complete params (params.yaml merged over pipeline/params/defaults.yaml, validated) to
``--out`` (``params.resolved.yaml``), where every other DVC stage tracks its keys
(:mod:`pipeline.workflow`). Snakemake needs no such file: the workflow resolves the params itself.
"""

from __future__ import annotations

import yaml

from pipeline.artifacts import save_text, setup_logging
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args

HEADER = "# WRITTEN by `python -m pipeline.stages.params`: params.yaml merged over pipeline/params/defaults.yaml\n"


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "out")
    params = load_params(args.params)
    setup_logging(args.log)
    save_text(args.out, HEADER + yaml.safe_dump(params, sort_keys=True, width=200))


if __name__ == "__main__":
    main()
