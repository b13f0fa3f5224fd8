"""Stage diagnostics: where in diffusion time and in frequency unlearning changed a model, the
two analyses behind the time/frequency paper's choice of a time window and a low-pass
(arXiv 2510.17917), for one unlearned model against the pretrained one.

Timesteps are split into B buckets [floor(bT/B), floor((b+1)T/B)). In each, ``draws`` triples (a, t, eps)
are drawn (seeded; a cycles over the distinct forget images, t ~ U within the bucket), the same
for both models, and with a_t = gamma_t a + sigma_t eps:

1. forget-loss gradient norm: n_M = ||grad_theta ||eps_theta(a_t, t) - eps||^2|| for the pretrained
   and the unlearned model M, one example at a time; per bucket the mean of each and the gap
   (unlearned - pretrained). Unlearning that acts at time t leaves a gap there.
2. spectrum of the change in predicted noise: Delta = eps_unlearned(a_t, t) - eps_pretrained(a_t, t);
   P(rho) = mean over draws and channels of |F(Delta)_k|^2 over the frequencies k with
   round(|k|) = rho (F the orthonormal 2-D DFT, k the signed integer frequencies). Mass at low rho
   is a change of coarse, semantic content; at high rho, of fine detail.

Outputs: ``diagnostics/<run>.json`` (both analyses per bucket) and ``diagnostics/<run>.png``.
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
