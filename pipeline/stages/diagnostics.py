"""Stage diagnostics: where in diffusion time and in frequency one unlearning run changed the
model, against the pretrained one (the analyses: :mod:`pipeline.evaluation.diagnostics`).

Outputs: ``diagnostics/<run>.json`` (both analyses per timestep bucket) and ``diagnostics/<run>.png``.
"""

from __future__ import annotations

import torch  # noqa: E402

from pipeline.artifacts import save_json, setup_logging  # noqa: E402
from pipeline.data.sets import forget_of, load_forget_set, load_training_set  # noqa: E402
from pipeline.diffusion.images import to_float  # noqa: E402
from pipeline.diffusion.models import device, load_model  # noqa: E402
from pipeline.evaluation.diagnostics import diagnose, figure
from pipeline.params.validation import load_params  # noqa: E402
from pipeline.stages.command import cli, stage_args  # noqa: E402


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "pretrained", "model", "model-name", "data", "forget", "out", "png")
    cfg = load_params(args.params)["diagnostics"]
    setup_logging(args.log)
    images = load_training_set(args.data)["images"]
    distinct = forget_of(args.model_name, load_forget_set(args.forget))[0]["distinct"]
    forget = torch.from_numpy(to_float(images[distinct]))
    dev = device()
    pretrained, scheduler = load_model(args.pretrained)
    unlearned, _ = load_model(args.model)
    pretrained, unlearned = pretrained.to(dev).eval(), unlearned.to(dev).eval()
    result = diagnose(pretrained, unlearned, scheduler, (2 * forget - 1).to(dev), cfg["buckets"], cfg["draws"],
                      cfg["seed"])
    save_json(args.out, {"model": args.model, **result})
    figure(args.png, result, f"{args.model}: where unlearning changed the model")


if __name__ == "__main__":
    main()
