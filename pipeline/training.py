"""The one training loop: pretraining, retraining and every unlearning method run through it.

A step draws the batches the objective ``needs`` (``accumulate`` micro-batches of them), takes
the gradient of its loss, or of each of its loss terms with one backward pass each through the
same forward graph and then the method's ``combine`` (SISS, EraseDiff), clips the resulting
direction to global norm ``clip`` (1.0, methods.md) and takes an AdamW step, with an optional
linear learning-rate warm-up and an optional EMA of the weights (kept for pretraining, as in
DDPM). All randomness comes from torch's global generator, seeded once, so the same params and
seed give the same weights on CPU.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.training_utils import EMAModel
from tqdm import trange

from pipeline.artifacts import to_csv
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

    def draw(self, needs: tuple[str, ...], batch_size: int, device) -> Batch:
        batch = Batch()
        if "forget" in needs:
            pick = torch.randint(0, len(self.forget_rows), (batch_size,))
            batch.forget = self.images[self.forget_rows[pick]].to(device)
            batch.neighbours = self.images[self.neighbours[self.forget_group[pick]]].to(device)
        if "retain" in needs:
            pick = torch.randint(0, len(self.retain_rows), (batch_size,))
            batch.retain = self.images[self.retain_rows[pick]].to(device)
        return batch


def flat_gradient(params: list[torch.Tensor], loss: torch.Tensor, retain_graph: bool) -> torch.Tensor:
    """d loss / d params as one flat vector (zeros for parameters the loss does not reach)."""
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params)])


def step_direction(net: torch.nn.Module, objective, batches: list[Batch]) -> tuple[torch.Tensor, dict]:
    """The update direction of one optimizer step over its micro-batches, and the step's figures.

    The loss (or each loss term) is averaged over the m micro-batches, so m micro-batches of B give
    the gradient of one batch of m*B. A method that returns several terms gets one backward pass
    per term through the same forward graph, and its ``combine`` turns the averaged per-term
    gradients into the direction.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    sums: dict[str, torch.Tensor] = {}
    record: dict[str, float] = defaultdict(float)
    for batch in batches:
        out = objective(net, batch)
        terms = out if isinstance(out, dict) else {"loss": out}
        for i, (name, loss) in enumerate(terms.items()):
            grad = flat_gradient(params, loss / len(batches), retain_graph=i + 1 < len(terms))
            sums[name] = sums[name] + grad if name in sums else grad
            record[name] += loss.item() / len(batches)
        for key, value in objective.stats.items():
            record[key] += value / len(batches)
    if not hasattr(objective, "combine"):
        return sums["loss"], dict(record)
    record.update({f"grad_norm_{name}": g.norm().item() for name, g in sums.items()})
    direction, stats = objective.combine(sums)
    return direction, {**record, **stats}


def set_gradients(params: list[torch.Tensor], direction: torch.Tensor) -> None:
    offset = 0
    for p in params:
        p.grad = direction[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()




def train(net: torch.nn.Module, objective, source: BatchSource, *, steps: int, batch_size: int, lr: float,
          seed: int, accumulate: int = 1, warmup_steps: int = 0, ema_decay: float | None = None,
          clip: float = 1.0, checkpoint_every: int = 0, on_checkpoint=None, desc: str = "train",
          log=None) -> tuple[torch.nn.Module, str]:
    """Take ``steps`` AdamW steps along ``objective``'s direction, each over ``accumulate``
    micro-batches of ``batch_size``, the direction clipped to global norm ``clip``.

    Every ``checkpoint_every`` steps (0: never) before the last, ``on_checkpoint(step, net)`` is
    called. Returns the trained network (the EMA weights when ``ema_decay`` is given) and the
    per-step log as CSV text: step, the loss (or each term), gradient norms (each term's, and
    ``grad_norm`` of the direction before clipping), the learning rate, and the method's figures.
    """
    torch.manual_seed(seed)
    device = next(net.parameters()).device
    params = [p for p in net.parameters() if p.requires_grad]
    net.train()
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))
    ema = EMAModel(params, decay=ema_decay) if ema_decay else None
    rows = []
    bar = trange(steps, desc=desc, unit="step", mininterval=5)
    for step in bar:
        batches = [source.draw(objective.needs, batch_size, device) for _ in range(accumulate)]
        direction, record = step_direction(net, objective, batches)
        set_gradients(params, direction)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        rows.append({"step": step + 1, **record, "grad_norm": grad_norm.item(), "lr": schedule.get_last_lr()[0]})
        bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k in ("loss", "retain", "forget")},
                        refresh=False)
        if log is not None and ((step + 1) % max(1, steps // 10) == 0 or step + 1 == steps):
            log.info("%s step %d/%d %s", desc, step + 1, steps,
                     " ".join(f"{k} {v:.4g}" for k, v in rows[-1].items() if k != "step"))
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            on_checkpoint(step + 1, net)
    net.eval()
    if ema is not None:
        net = copy.deepcopy(net)
        ema.copy_to(net.parameters())
    return net, to_csv(rows)
