"""Stage classifier: the digit classifier of FID, IS and the copy-detection fallback
(:mod:`pipeline.evaluation.classifier`), trained on the labelled retain images and tested on the
held-out ones.

Outputs: ``models/classifier.pt`` and ``metrics/classifier.json`` (test accuracy, image counts,
steps, wall time).
"""

from __future__ import annotations

import time

from pipeline.artifacts import save_json, setup_logging
from pipeline.data.sets import load_forget_set, load_heldout_set, load_training_set
from pipeline.diffusion.models import device
from pipeline.evaluation.classifier import heldout_accuracy, labelled_retain, save_classifier, train_classifier
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "data", "forget", "heldout", "out", "metrics-out")
    cfg = load_params(args.params)["metrics"]["classifier"]
    train, forget, heldout = load_training_set(args.data), load_forget_set(args.forget), load_heldout_set(args.heldout)
    rows, labels = labelled_retain(train, forget)
    log = setup_logging(args.log)
    classes = int(max(labels.max(), heldout["labels"].max())) + 1
    start = time.perf_counter()
    model = train_classifier(train["images"], labels, cfg, log, classes, device(), rows=rows)
    wall = time.perf_counter() - start
    report = heldout_accuracy(model, heldout)
    save_classifier(args.out, model.cpu())
    save_json(args.metrics_out, {
        **report, "n_train": len(rows), "classes": classes,
        "classes_without_training_images": sorted(set(range(classes)) - set(labels.tolist())),
        "steps": cfg["steps"], "wall_time_s": round(wall, 2)})
    if report["test_accuracy"] is None:
        log.info("classifier: no test accuracy, %s", report["reason"])
    else:
        log.info("classifier: test accuracy %.2f %% on %d held-out images", 100 * report["test_accuracy"],
                 report["n_test"])


if __name__ == "__main__":
    main()
