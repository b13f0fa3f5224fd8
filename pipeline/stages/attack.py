"""Stage attack: one relearning attack on one model (:mod:`pipeline.evaluation.attacks`), and the
forget set measured again after it.

Output: ``attacks/<model>/<kind>.json`` with the rows fine-tuned on, the steps, and per distinct
forget image the share of samples reproducing it, its NLL and the probe's pixel L2 (the report
sets them beside the model's own, from ``metrics/<model>.json``).
"""

from __future__ import annotations

import numpy as np

from pipeline.artifacts import save_json, setup_logging
from pipeline.data.sets import forget_of, load_forget_set, load_knn, load_training_set
from pipeline.diffusion.models import device, load_model
from pipeline.errors import UserError
from pipeline.evaluation.attacks import KINDS, attack_rows, forget_figures, relearn
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "model", "model-name", "kind", "data", "forget", "knn", "out")
    params = load_params(args.params)
    log = setup_logging(args.log)
    if args.kind not in KINDS:
        raise UserError(f"--kind: expected one of {', '.join(KINDS)}, got {args.kind!r}")
    train_set = load_training_set(args.data)
    forget, knn = forget_of(args.model_name, load_forget_set(args.forget), load_knn(args.knn))
    rows = attack_rows(args.kind, len(train_set["images"]), forget, knn)
    unet, scheduler = load_model(args.model)
    unet = relearn(unet.to(device()), scheduler, train_set["images"], rows, params)
    per_image = forget_figures(params, unet.eval(), scheduler, train_set, forget)
    save_json(args.out, {"model": args.model_name, "kind": args.kind, "rows": len(rows),
                         "steps": params["attack"]["steps"], "n_samples": params["attack"]["samples"],
                         **{key: float(np.mean([p[key] for p in per_image]))
                            for key in ("reproduction", "nll_bits_per_dim", "probe_pixel_l2")},
                         "per_image": per_image})
    log.info("%s after relearning on %s (%d rows, %d steps): reproduction %.3f", args.model_name, args.kind,
             len(rows), params["attack"]["steps"], np.mean([p["reproduction"] for p in per_image]))


if __name__ == "__main__":
    main()
