"""The one training loop: pretraining, retraining and every unlearning method run through it.

A step draws the batches the objective ``needs``, computes its scalar loss, back-propagates,
clips the gradient to global norm ``clip`` (1.0, methods.md) and takes an AdamW step, with an
optional linear learning-rate warm-up and an optional EMA of the weights (kept for pretraining,
as in DDPM). All randomness comes from torch's global generator, seeded once, so the same
params and seed give the same weights on CPU.
"""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.training_utils import EMAModel
from tqdm import trange

from pipeline.images import to_float


@dataclass
class Batch:
    """What one step sees. ``retain`` (B, C, H, W); ``forget`` (B, C, H, W) and its K nearest
    retain images ``neighbours`` (B, K, C, H, W); all in model space [-1, 1]."""

    retain: torch.Tensor | None = None
    forget: torch.Tensor | None = None
    neighbours: torch.Tensor | None = None


class BatchSource:
    """Draws batches (uniformly, with replacement) from the rows of the training set.

    ``retain_rows`` are the rows a step may use as retain data (all of X for pretraining);
    ``forget_rows`` the rows of A, ``forget_group`` the distinct image each belongs to, and
    ``neighbours`` the K retain rows nearest to each distinct forget image (from the knn stage).
    """

    def __init__(self, images: np.ndarray, retain_rows: np.ndarray, forget_rows: np.ndarray | None = None,
                 forget_group: np.ndarray | None = None, neighbours: np.ndarray | None = None):
        self.images = torch.from_numpy(to_float(images)) * 2 - 1
        self.retain_rows = torch.from_numpy(retain_rows)
        self.forget_rows = None if forget_rows is None else torch.from_numpy(forget_rows)
        self.forget_group = None if forget_group is None else torch.from_numpy(forget_group)
        self.neighbours = None if neighbours is None else torch.from_numpy(neighbours)

    def _pick(self, rows: torch.Tensor, n: int) -> torch.Tensor:
        return rows[torch.randint(0, len(rows), (n,))]

    def draw(self, needs: tuple[str, ...], batch_size: int, device) -> Batch:
        batch = Batch()
        if "forget" in needs:
            pick = torch.randint(0, len(self.forget_rows), (batch_size,))
            batch.forget = self.images[self.forget_rows[pick]].to(device)
            batch.neighbours = self.images[self.neighbours[self.forget_group[pick]]].to(device)
        if "retain" in needs:
            batch.retain = self.images[self._pick(self.retain_rows, batch_size)].to(device)
        return batch


def train(net: torch.nn.Module, objective, source: BatchSource, *, steps: int, batch_size: int, lr: float,
          seed: int, warmup_steps: int = 0, ema_decay: float | None = None, clip: float = 1.0,
          desc: str = "train", log=None) -> tuple[torch.nn.Module, str]:
    """Optimise ``objective(net, batch)`` for ``steps`` AdamW steps.

    Returns the trained network (the EMA weights when ``ema_decay`` is given) and the per-step
    log as CSV text (step, loss, gradient norm before clipping, learning rate).
    """
    torch.manual_seed(seed)
    device = next(net.parameters()).device
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))
    ema = EMAModel(net.parameters(), decay=ema_decay) if ema_decay else None
    rows = []
    bar = trange(steps, desc=desc, unit="step", mininterval=5)
    for step in bar:
        loss = objective(net, source.draw(objective.needs, batch_size, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.step(net.parameters())
        rows.append((step + 1, loss.item(), grad_norm.item(), schedule.get_last_lr()[0]))
        bar.set_postfix(loss=f"{rows[-1][1]:.3f}", refresh=False)
        if log is not None and ((step + 1) % max(1, steps // 10) == 0 or step + 1 == steps):
            log.info("%s step %d/%d loss %.4f grad_norm %.3f", desc, step + 1, steps, rows[-1][1], rows[-1][2])
    net.eval()
    if ema is not None:
        net = copy.deepcopy(net)
        ema.copy_to(net.parameters())
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["step", "loss", "grad_norm", "lr"])
    writer.writerows(rows)
    return net, text.getvalue()
