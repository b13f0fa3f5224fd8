r"""Stage forget_set: which rows of the training set X form the forget set A; R = X \ A, by the
strategy ``forget.strategy`` (:mod:`pipeline.data.forget_sets` states each exactly). For
``memorized`` it first samples the pretrained model (``forget.memorized``).

Outputs: ``forget.npz`` with ``rows`` (rows of X in A), ``group`` (for each row of A, which
distinct image it is: identical copies share one group), ``distinct`` (one row of X per group) and
``request`` (per group, the index in ``experiment.requests`` of the request that took it; 0 without);
the forget set's table (CSV, one line per chosen distinct image: its row, name, label, copies and
the strategy's evidence); and a PNG of the chosen images, for ``memorized`` each one beside the
samples that reproduced it (closest first).
"""

from __future__ import annotations

import numpy as np

from pipeline.artifacts import save_npz, save_text, setup_logging
from pipeline.data.forget_sets import choose, save_figure, table
from pipeline.data.sets import group_identical, load_training_set
from pipeline.diffusion.models import compute_settings, device, load_model
from pipeline.diffusion.sampler import sample
from pipeline.errors import UserError
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args


def memorization_samples(params: dict, model: str | None) -> np.ndarray | None:
    """M samples from the pretrained model for ``memorized`` (None for other strategies)."""
    if params["forget"]["strategy"] != "memorized":
        return None
    if model is None:
        raise UserError("forget.strategy 'memorized' needs the pretrained model (--model)")
    cfg = params["forget"]["memorized"]
    unet, scheduler = load_model(model)
    return sample(unet.to(device()).eval(), scheduler, cfg["samples"], cfg["steps"], cfg["batch_size"], cfg["seed"],
                  **compute_settings(params))


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "data", "out", "table", "png", optional=("model",))
    params = load_params(args.params)
    log = setup_logging(args.log)
    train = load_training_set(args.data)
    samples = memorization_samples(params, args.model)
    choice = choose(params, train, samples)
    rows = choice.rows
    group, first = group_identical(train["images"][rows])
    distinct = rows[first]
    request = choice.request[first] if choice.request is not None else np.zeros(len(first), dtype=np.int64)
    save_npz(args.out, rows=rows, group=group, distinct=distinct, request=request)
    save_text(args.table, table(choice, train, group, distinct))
    save_figure(args.png, choice, train["images"], distinct, samples)
    every_group, _ = group_identical(train["images"])
    left = int(np.isin(every_group, every_group[rows]).sum()) - len(rows)
    if left:
        log.warning("%d identical copies of the forget images stay in the retain set", left)
    log.info("forget set: %d rows, %d distinct images; retain set: %d rows",
             len(rows), len(distinct), len(train["images"]) - len(rows))


if __name__ == "__main__":
    main()
