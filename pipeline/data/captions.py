"""The captions of a training set, for a text-to-image model trained here (``model.source: train``).

Each row's label names what it shows, in words (``text_to_image.captions.labels``: label 7 is
"seven"); an injected image (``data.inject``) is captioned as the label that
``text_to_image.captions.injected`` gives it. Each row takes one of the ``templates``, drawn
(seeded) per row: "a handwritten digit seven", "the digit seven, written by hand".

An injected image duplicated many times under the caption of a whole class is how a prompt comes
to be memorized in a web-scale data set (Webster 2023; Carlini et al. 2023): the same image under
the same caption, among many other images under that caption. Generations of the caption then
reproduce the image in part, and the other template is a "modified" prompt that still triggers it.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import UserError


def caption_table(cfg: dict) -> list[str]:
    """Every caption, ``templates`` x ``labels``, label-major: caption ``len(templates) * label + k``
    is template k of that label."""
    return [template.format(label=word) for word in cfg["labels"] for template in cfg["templates"]]


def row_captions(labels: np.ndarray, injected: np.ndarray, cfg: dict, seed: int) -> np.ndarray:
    """Each row's caption, as an index into :func:`caption_table`: its label's (an injected row's
    label from ``cfg['injected']``), with a template drawn from ``seed``."""
    labels = np.where(injected >= 0, np.asarray(cfg["injected"], dtype=np.int64)[np.maximum(injected, 0)], labels)
    unknown = sorted(set(labels[(labels < 0) | (labels >= len(cfg["labels"]))].tolist()))
    if unknown:
        raise UserError(f"text_to_image.captions.labels: no word for labels {unknown} of the training set "
                        f"(it names {len(cfg['labels'])} labels, 0 to {len(cfg['labels']) - 1})")
    templates = len(cfg["templates"])
    return labels * templates + np.random.default_rng(seed).integers(templates, size=len(labels))
