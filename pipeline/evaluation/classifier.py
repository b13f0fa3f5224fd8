"""A small digit classifier trained on the retain set, for FID and IS.

The MNIST T-shirt protocol of SISS (Alberti et al. 2025) and ReTrack scores the quality of MNIST
samples with an MNIST digit classifier instead of Inception v3, which was trained on natural RGB
photographs: FID on the classifier's penultimate features and IS on its logits
(:mod:`pipeline.evaluation.quality`). Its features are also the copy-detection embedding when no SSCD model
is given (:mod:`pipeline.evaluation.copydetect`).

The classifier is trained on the labelled retain images only (forget rows, and injected rows,
whose label is -1, are left out), so nothing of the forget set shapes the figures that judge
forgetting, and it is tested on the held-out images (``data.heldout``), which no model ever sees.

Saved with ``torch.save`` as ``{"state_dict", "config": {"channels", "classes"}}`` (:func:`save_classifier`,
:func:`load_classifier`).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import trange

from pipeline.artifacts import atomic_path
from pipeline.data.sets import retain_rows
from pipeline.diffusion.images import to_float
from pipeline.errors import UserError

FEATURES = 128


UNLABELLED = ("metrics.quality.features: 'classifier' needs labelled retain images (MNIST digits, or an image "
              "folder with one sub-folder per class); use 'pca' or 'inception'")


class DigitClassifier(nn.Module):
    """Two conv-ReLU-maxpool blocks (32 and 64 channels), pooled to 4 x 4, a ``FEATURES``-d
    Linear-ReLU layer (the penultimate features) and a linear head (the logits). Any resolution
    >= 8, 1 or 3 channels; inputs are float [0, 1] images (B, C, H, W)."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.channels, self.classes = channels, classes
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate (B, FEATURES) activations."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, classes) logits."""
        return self.head(self.body(x))


def train_classifier(images: np.ndarray, labels: np.ndarray, cfg: dict, log: logging.Logger,
                     classes: int | None = None, on: torch.device | str = "cpu",
                     rows: np.ndarray | None = None) -> DigitClassifier:
    """Train on uint8 (N, C, H, W) ``images`` (or their ``rows``, read batch by batch) with labels
    0..classes-1 (one per image trained on; default classes: the largest label + 1) for
    ``cfg["steps"]`` AdamW steps, the learning rate decaying from ``cfg["lr"]`` to 0 on a cosine, on
    batches drawn with replacement; seeded by ``cfg["seed"]``, deterministic on the CPU."""
    rows = np.arange(len(images)) if rows is None else rows
    torch.manual_seed(cfg["seed"])
    model = DigitClassifier(images.shape[1], classes or int(labels.max()) + 1).to(on)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg["steps"])
    generator = torch.Generator().manual_seed(cfg["seed"])
    targets = torch.from_numpy(labels)
    bar = trange(cfg["steps"], desc="classifier", unit="step", mininterval=5)
    for _ in bar:
        pick = torch.randint(0, len(rows), (cfg["batch_size"],), generator=generator)
        x = torch.from_numpy(to_float(images[rows[pick.numpy()]])).to(on)
        loss = F.cross_entropy(model(x), targets[pick].to(on))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    log.info("classifier: %d steps on %d images, final batch loss %.4f", cfg["steps"], len(rows), loss.item())
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """The share of uint8 (N, C, H, W) ``images`` whose predicted class is their label."""
    on = next(model.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(to_float(images[i : i + batch_size])).to(on)
        correct += int((model(x).argmax(1).cpu() == torch.from_numpy(labels[i : i + batch_size])).sum())
    return correct / len(images)


def save_classifier(path: str | Path, model: DigitClassifier) -> None:
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "config": {"channels": model.channels, "classes": model.classes}}, tmp)


def load_classifier(path: str | Path) -> DigitClassifier:
    """The classifier :func:`save_classifier` wrote, on the CPU in eval mode; errors name the path."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: classifier not found (the classifier stage writes it)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = DigitClassifier(**saved["config"])
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, OSError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        raise UserError(f"{path}: not a readable classifier ({exc})") from exc
    return model.eval()


def labelled_retain(train: dict, forget: dict) -> tuple[np.ndarray, np.ndarray]:
    """The rows of X of the retain images that have a label, and their labels; at least two
    classes or UserError."""
    rows = retain_rows(len(train["images"]), forget["rows"])
    rows = rows[train["labels"][rows] >= 0]
    if len(np.unique(train["labels"][rows])) < 2:
        raise UserError(UNLABELLED)
    return rows, train["labels"][rows]


def heldout_accuracy(model: DigitClassifier, heldout: dict) -> dict:
    """Accuracy on the labelled held-out images; null, with the reason, when none is labelled."""
    labelled = heldout["labels"] >= 0
    if not labelled.any():
        return {"test_accuracy": None, "n_test": 0,
                "reason": "the held-out images have no labels (an image folder without class sub-folders)"}
    return {"test_accuracy": accuracy(model, heldout["images"][labelled], heldout["labels"][labelled]),
            "n_test": int(labelled.sum())}
