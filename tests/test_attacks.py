"""Relearning attacks (pipeline/evaluation/attacks.py): what they fine-tune on, that an attacked
model which memorized an image reproduces it, and the report's before/after table."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.evaluation.attacks import attack_rows, forget_figures, relearn
from pipeline.report.tables import resurgence_markdown, resurgence_rows


class Memorizer(torch.nn.Module):
    """eps_theta that denoises every x_t towards one image a, eps = (x_t - gamma_t a) / sigma_t: a
    model that memorized a (its samples are a), plus a learnable offset that fine-tuning moves."""

    def __init__(self, image: torch.Tensor, scheduler):
        super().__init__()
        self.register_buffer("a", image)
        self.offset = torch.nn.Parameter(torch.zeros(()))
        self.register_buffer("alpha_bar", scheduler.alphas_cumprod.clone())
        self.config = SimpleNamespace(sample_size=image.shape[-1], in_channels=image.shape[0])

    def forward(self, x, t):
        t = torch.as_tensor(t, device=x.device).expand(len(x))  # the NLL's ODE asks at continuous times
        ab = self.alpha_bar[t.round().long().clamp(0, len(self.alpha_bar) - 1)].view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(x - ab.sqrt() * self.a) / (1 - ab).sqrt() + self.offset)


@pytest.fixture
def planted(rng):
    """24 random 8x8 images; row 20 (the forget image) and rows 21-23 its copies; K = 3 neighbours."""
    images = rng.integers(0, 256, (24, 1, 8, 8), dtype=np.uint8)
    images[21:] = images[20]
    forget = {"rows": np.arange(20, 24), "group": np.zeros(4, dtype=np.int64), "distinct": np.array([20])}
    knn = {"neighbours": np.array([[4, 9, 2]]), "distances": np.ones((1, 3))}
    return {"images": images}, forget, knn


def attack_params(params):
    params["attack"].update(steps=3, batch_size=4, lr=1e-2, samples=6)
    params["metrics"]["nll"].update(rtol=1e-2, atol=1e-2)
    params["sampling"].update(steps=5)
    return params


def test_an_attack_fine_tunes_on_the_retain_set_or_on_the_neighbours(planted):
    train_set, forget, knn = planted
    assert attack_rows("retain", 24, forget, knn).tolist() == list(range(20))
    assert attack_rows("neighbours", 24, forget, knn).tolist() == [2, 4, 9]


def test_a_model_that_memorized_the_image_reproduces_it_after_the_attack(params, scheduler, planted):
    train_set, forget, knn = planted
    params = attack_params(params)
    image = torch.from_numpy(train_set["images"][20].astype(np.float32) / 255 * 2 - 1)
    net = relearn(Memorizer(image, scheduler), scheduler, train_set["images"],
                  attack_rows("neighbours", 24, forget, knn), params)
    assert net.offset.item() != 0  # the attack trained it
    (figures,) = forget_figures(params, net.eval(), scheduler, train_set, forget)
    assert figures["row"] == 20 and figures["reproduction"] == 1.0
    assert figures["probe_pixel_l2"] < 0.5 and np.isfinite(figures["nll_bits_per_dim"])
    other = torch.from_numpy(train_set["images"][3].astype(np.float32) / 255 * 2 - 1)
    (elsewhere,) = forget_figures(params, Memorizer(other, scheduler).eval(), scheduler, train_set, forget)
    assert elsewhere["reproduction"] == 0.0 and elsewhere["probe_pixel_l2"] > figures["probe_pixel_l2"]


def test_the_report_sets_each_attack_beside_the_models_own_figures():
    own = {"n_samples": 100,  # a metrics JSON's forget figures, two forget images (rows 3 and 8)
           "forget_reproduction": {"per_image": [{"row": 3, "reproduced": 0}, {"row": 8, "reproduced": 2}]},
           "per_image": [{"row": 3, "nll_bits_per_dim": 6.0, "probe_pixel_l2": 1.0},
                         {"row": 8, "nll_bits_per_dim": 7.0, "probe_pixel_l2": 2.0}]}
    after = {"model": "retrack-s0", "kind": "neighbours", "steps": 50, "reproduction": 0.3,
             "nll_bits_per_dim": 3.0, "probe_pixel_l2": 0.5}
    (row,) = resurgence_rows({"retrack-s0": own}, [after])
    assert row["method"] == "retrack" and row["reproduction_before"] == 0.01 and row["reproduction_after"] == 0.3
    assert row["nll_bits_per_dim_before"] == 6.5 and row["probe_pixel_l2_before"] == 1.5
    text = resurgence_markdown([row])
    assert "before → after 50 steps" in text and "| retrack | neighbours | 1 | 1.00 → 30.00 | 6.50 → 3.00 |" in text
    assert resurgence_markdown([]) == ""
