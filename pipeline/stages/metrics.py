"""Stage metrics: how much of the forget set one model still holds, and what forgetting cost
(every figure is defined in :mod:`pipeline.evaluation.metrics` and the modules it names).

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
