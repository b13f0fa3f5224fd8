"""Stage trajectory: forgetting and quality over the checkpoints of one unlearning run (for the
pretrained model, step 0 alone; :mod:`pipeline.evaluation.trajectory`). ``--samples``: the sample
stage's samples of the model, the point of the model itself.

Output: a CSV with step, forget_reproduction_pct, forget_reproduced, n_samples, fid.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import save_text, setup_logging, to_csv
from pipeline.data.sets import forget_of, load_forget_set, load_training_set
from pipeline.diffusion.images import load_samples
from pipeline.evaluation.classifier import load_classifier
from pipeline.evaluation.quality import check_setup
from pipeline.evaluation.trajectory import trajectory
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "model", "model-name", "samples", "data", "forget", "out",
                      optional=("classifier",))
    params = load_params(args.params)
    check_setup(params["metrics"]["quality"], has_classifier=bool(args.classifier))
    log = setup_logging(args.log)
    classifier = load_classifier(args.classifier) if args.classifier else None
    forget, _ = forget_of(args.model_name, load_forget_set(args.forget))
    rows = trajectory(params, Path(args.model), load_training_set(args.data), forget, classifier,
                      load_samples(args.samples))
    save_text(args.out, to_csv(rows))
    log.info("%s: forget reproduction over steps %s", args.model,
             ", ".join(f"{r['step']}: {r['forget_reproduction_pct']} %" for r in rows))


if __name__ == "__main__":
    main()
