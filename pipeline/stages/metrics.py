"""Stage metrics: how much of the forget set a model still holds, and what forgetting cost.

From the model's samples:

- Forget reproduction (the "% T-shirt" of the SISS/ReTrack MNIST protocol): the share of samples
  whose L2 distance, in [0, 1] pixel space, to some distinct forget image a_j is below tau_j. The
  protocol's tau = 10 over 784 pixels sits at 0.87 of the T-shirt's distance to its nearest MNIST
  digit (11.49), so by default tau_j = 0.87 * d(a_j, nearest retain image)
  (``metrics.threshold.rule: relative``); ``absolute`` sets tau directly. The JSON says which.
- Nearest-neighbour memorization: the share of samples whose nearest distinct training image is a
  forget image and lies much closer than the second nearest, d_1 < ``ratio`` * d_2 (a relative
  distance test like that of training-data extraction, Carlini et al. 2023; identical copies count
  as one image, or the test could never pass for a duplicated image).
- Quality: FID and IS (:mod:`pipeline.evaluation.quality`) of the samples that are not forget
  reproductions, as in the reference protocol.

From the model itself, for each distinct forget image: its NLL in bits/dim by the probability-flow
ODE (:mod:`pipeline.evaluation.likelihood`), the memorization probe at t = 250 with pixel and embedding
similarity and the normalized SSCD (:mod:`pipeline.evaluation.probes`, :mod:`pipeline.evaluation.copydetect`), and the
loss-based membership attack's AUC against held-out images. Cost: the wall time, steps and peak
memory that the model's training or unlearning job recorded.

Outputs: ``metrics/<model>.json``, and ``metrics/<model>.npz`` with the probe's noised images and
reconstructions (``noised``, ``reconstructions``: (m, draws, C, H, W) in [0, 1]).
"""

from __future__ import annotations

from pipeline.artifacts import save_json, save_npz, setup_logging
from pipeline.data.sets import forget_of, load_forget_set, load_heldout_set, load_knn, load_training_set
from pipeline.diffusion.images import load_samples
from pipeline.diffusion.models import device, load_model
from pipeline.errors import UserError
from pipeline.evaluation.classifier import load_classifier
from pipeline.evaluation.metrics import cost, embedding_for, evaluate_model, evaluate_samples
from pipeline.evaluation.quality import check_setup
from pipeline.params.inputs import needs_classifier
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "samples", "model", "data", "heldout", "forget", "knn", "model-name", "out",
                      "npz", optional=("classifier",))
    params = load_params(args.params)
    if needs_classifier(params) and not args.classifier:
        raise UserError("--classifier: required by metrics.quality.features 'classifier' or by "
                        "metrics.copy_detection.sscd null (the fallback embedding)")
    check_setup(params["metrics"]["quality"], has_classifier=bool(args.classifier))
    log = setup_logging(args.log)
    classifier = load_classifier(args.classifier) if args.classifier else None
    embedding = embedding_for(params, classifier)
    train = load_training_set(args.data)
    forget, knn = forget_of(args.model_name, load_forget_set(args.forget), load_knn(args.knn))
    unet, scheduler = load_model(args.model)
    unet = unet.to(device()).eval()
    result = evaluate_samples(params, load_samples(args.samples), train, forget, classifier)
    model_figures, probe_images = evaluate_model(params, unet, scheduler, train, forget, knn,
                                                 load_heldout_set(args.heldout), embedding)
    save_npz(args.npz, **probe_images)
    save_json(args.out, {"model": args.model_name, **result, **model_figures, "cost": cost(args.model)})
    log.info("%s: forget reproduction %.2f %% (%d / %d), FID %.3f, NLL %.3f bits/dim, probe nSSCD %.3f, "
             "membership AUC %.3f", args.model_name, 100 * result["forget_reproduction"]["rate"],
             result["forget_reproduction"]["count"], result["n_samples"], result["quality"]["fid"],
             model_figures["nll"]["bits_per_dim"], model_figures["probe"]["nsscd"], model_figures["membership"]["auc"])


if __name__ == "__main__":
    main()
