"""The one training loop: pretraining, retraining and every unlearning method run through it.

A step draws the batches the objective ``needs`` (``accumulate`` micro-batches of them), takes
the gradient of its loss, or of each of its loss terms with one backward pass each through the
same forward graph and then the method's ``combine`` (SISS, EraseDiff), clips the resulting
direction to global norm ``clip`` (1.0, methods.md) and takes an AdamW step, with an optional
linear learning-rate warm-up and an optional EMA of the weights (kept for pretraining, as in
DDPM). All randomness (the batches' rows, and the methods' timesteps and noise) comes from torch's
global generators, seeded once, so the same params and seed give the same weights on CPU.

Resuming: :mod:`pipeline.training.resume`.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from pipeline.artifacts import to_csv
from pipeline.diffusion.images import to_float
from pipeline.diffusion.models import autocast, prepare, standard_layout
from pipeline.methods.contract import Batch, Method
from pipeline.training.cost import attempt
from pipeline.training.resume import STATE, digest, resume_from, save_attempts, save_state


class BatchSource:
    """Draws batches (uniformly, with replacement) from the rows of the training set.

    ``images`` are uint8 (N, C, H, W), in memory or memory-mapped: a batch reads its rows and
    turns them into floats in [-1, 1], so memory does not grow with N; float arrays (latents of a
    text-to-image model) are read as they are. ``retain_rows`` are the
    rows a step may use as retain data (all of X for pretraining); ``forget_rows`` the rows of A,
    ``forget_group`` the distinct image each belongs to, and ``neighbours`` the K retain rows
    nearest to each distinct forget image (from the knn stage). A captioned training set gives
    each row's caption (``captions``, indices into ``text``, the captions' embeddings
    (n, 77, D)): a retain batch then brings its examples' embeddings.
    """

    def __init__(self, images: np.ndarray, retain_rows: np.ndarray, forget_rows: np.ndarray | None = None,
                 forget_group: np.ndarray | None = None, neighbours: np.ndarray | None = None,
                 captions: np.ndarray | None = None, text: torch.Tensor | None = None):
        self.images = images
        self.retain_rows = torch.from_numpy(retain_rows)
        self.forget_rows = None if forget_rows is None else torch.from_numpy(forget_rows)
        self.forget_group = None if forget_group is None else torch.from_numpy(forget_group)
        self.neighbours = None if neighbours is None else torch.from_numpy(neighbours)
        self.captions = None if captions is None else torch.from_numpy(captions)
        self.text = text

    def read(self, rows: torch.Tensor, device) -> torch.Tensor:
        """The images at ``rows`` (any shape of indices), as floats in [-1, 1] on ``device`` (latents as they are)."""
        images = self.images[rows.numpy()]
        if images.dtype != np.uint8:
            return torch.from_numpy(np.asarray(images, dtype=np.float32)).to(device)
        return torch.from_numpy(to_float(images)).to(device) * 2 - 1

    def draw(self, needs: tuple[str, ...], batch_size: int, device) -> Batch:
        batch = Batch()
        if "forget" in needs:
            pick = torch.randint(0, len(self.forget_rows), (batch_size,))
            batch.forget = self.read(self.forget_rows[pick], device)
            batch.neighbours = self.read(self.neighbours[self.forget_group[pick]], device)
        if "retain" in needs:
            pick = torch.randint(0, len(self.retain_rows), (batch_size,))
            batch.retain = self.read(self.retain_rows[pick], device)
            if self.captions is not None:
                batch.text = self.text[self.captions[self.retain_rows[pick]]].to(device)
        return batch

    def digest(self) -> str:
        """A hash of the images and rows the batches are drawn from: a resumed run must see the same."""
        return digest(self.images, self.retain_rows, self.forget_rows, self.forget_group, self.neighbours,
                      self.captions, self.text)


class Autocast:
    """``net`` with its forward pass under bf16 autocast (:func:`pipeline.diffusion.models.autocast`) and its
    prediction returned in float32, so that the objectives compute every loss in float32."""

    def __init__(self, net: torch.nn.Module, precision: str):
        self.net, self.precision = net, precision

    def __call__(self, *args, **kwargs):
        with autocast(self.precision, next(self.net.parameters()).device):
            out = self.net(*args, **kwargs)
        return type(out)(sample=out.sample.float())


def flat_gradient(params: list[torch.Tensor], loss: torch.Tensor, retain_graph: bool) -> torch.Tensor:
    """d loss / d params as one flat vector (zeros for parameters the loss does not reach)."""
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params)])


def step_direction(net: torch.nn.Module, method: Method, batches: list[Batch],
                   precision: str = "fp32") -> tuple[torch.Tensor, dict]:
    """The update direction of one optimizer step over its micro-batches, and the step's figures.

    Each loss term is averaged over the m micro-batches, so m micro-batches of B give the gradient
    of one batch of m*B; each term gets one backward pass through the same forward graph, and the
    method's ``combine`` turns the averaged per-term gradients into the direction (a method of
    several terms also logs each term's gradient norm). With ``precision: bf16`` the method sees
    the net under autocast.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    forward = net if precision == "fp32" else Autocast(net, precision)
    sums: dict[str, torch.Tensor] = {}
    record: dict[str, float] = defaultdict(float)
    for batch in batches:
        losses = method(forward, batch)
        for i, (name, loss) in enumerate(losses.terms.items()):
            grad = flat_gradient(params, loss / len(batches), retain_graph=i + 1 < len(losses.terms))
            sums[name] = sums[name] + grad if name in sums else grad
            record[name] += loss.item() / len(batches)
        for key, value in losses.stats.items():
            record[key] += value / len(batches)
    if len(sums) > 1:
        record.update({f"grad_norm_{name}": g.norm().item() for name, g in sums.items()})
    direction, stats = method.combine(sums)
    return direction, {**record, **stats}


def optimizer_settings(cfg: dict) -> dict:
    """AdamW's ``betas``, ``weight_decay`` and ``eps`` from a params section (``pretrain``,
    ``methods.<name>``), as keyword arguments of :func:`train`."""
    return {"betas": tuple(cfg["betas"]), "weight_decay": cfg["weight_decay"], "eps": cfg["eps"]}


def set_gradients(params: list[torch.Tensor], direction: torch.Tensor) -> None:
    offset = 0
    for p in params:
        p.grad = direction[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


@contextlib.contextmanager
def subnormals_flushed():
    """Subnormal floats (below 1.2e-38) read as zero on the CPU within the block
    (``torch.set_flush_denormal``, x86 with SSE3; off again after, torch's default). SISS's
    importance weights of the examples drawn from the other component of its mixture reach 1e-40
    and below, and every convolution of the backward passes then runs on subnormal numbers at a
    fraction of its speed: 0.80 s against 0.28 s per step on the default model here, the same
    direction. GPUs compute on subnormals at full speed."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def train(net: torch.nn.Module, objective, source: BatchSource, *, steps: int, batch_size: int, lr: float,
          seed: int, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.01, eps: float = 1e-8,
          accumulate: int = 1, warmup_steps: int = 0, ema_decay: float | None = None,
          clip: float = 1.0, precision: str = "fp32", channels_last: bool = False, compile: bool = False,
          checkpoint_every: int = 0, on_checkpoint=None, resume: Path | None = None, resume_every: int = 0,
          resume_key: dict | None = None, desc: str = "train", log=None) -> tuple[torch.nn.Module, str]:
    """Take ``steps`` AdamW steps (``lr``, ``betas``, ``weight_decay``, ``eps``; torch's defaults
    unless given) along ``objective``'s direction, each over ``accumulate`` micro-batches of
    ``batch_size``, the direction clipped to global norm ``clip``, the forward
    passes in ``precision`` (fp32, or bf16 autocast), with the weights in channels_last memory
    format and the forward passes compiled when asked (:func:`pipeline.diffusion.models.prepare`; the
    batches need no conversion). The objective calls the prepared (perhaps compiled) module, while
    the checkpoints, the resumable state and the result are of ``net`` itself: the same keys as
    without these options (no ``_orig_mod.`` prefix), the result's weights back in the default
    layout. Each option, when on, is part of the fingerprint, as ``precision`` is: they change the
    last bits of the numbers.

    Every ``checkpoint_every`` steps (0: never) before the last, ``on_checkpoint(step, net)`` is
    called. With a ``resume`` directory, the loop continues from the state saved there if it
    was saved by a run with the same fingerprint: these arguments, ``resume_key`` (what the
    caller's objective depends on), the source's data and the initial weights; else it starts
    afresh, emptying the directory. It saves its state there every ``resume_every`` steps (0:
    never) before the last, after that step's checkpoint. Returns the trained network (the EMA
    weights when ``ema_decay`` is given) and the per-step log as CSV text: step, the loss (or each
    term), gradient norms (each term's, and ``grad_norm`` of the direction before clipping), the
    learning rate, and the method's figures.
    """
    torch.manual_seed(seed)
    device = next(net.parameters()).device
    net.train()
    forward = prepare(net, device, channels_last, compile)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, eps=eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))
    ema = EMAModel(params, decay=ema_decay) if ema_decay else None
    loop = (net, optimizer, schedule, ema)
    started, first, rows, attempts, key = time.time(), 0, [], [], None
    if resume is not None:
        resume = Path(resume)
        options = {"channels_last": channels_last, "compile": compile}  # only when on: older states stay valid
        settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "betas": list(betas),
                    "weight_decay": weight_decay, "eps": eps, "seed": seed, "accumulate": accumulate,
                    "warmup_steps": warmup_steps, "ema_decay": ema_decay, "clip": clip, "precision": precision,
                    "checkpoint_every": checkpoint_every, "device": device.type, "caller": resume_key,
                    "data": source.digest(), **{k: v for k, v in options.items() if v}}
        key = digest(*net.state_dict().values(), key=settings)
        first, rows, attempts = resume_from(resume, key, *loop)
    bar = tqdm(range(first, steps), initial=first, total=steps, desc=desc, unit="step", mininterval=5)
    with subnormals_flushed():
        for step in bar:
            batches = [source.draw(objective.needs, batch_size, device) for _ in range(accumulate)]
            direction, record = step_direction(forward, objective, batches, precision)
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
            if key is not None and resume_every and (step + 1) % resume_every == 0 and step + 1 < steps:
                so_far = [*attempts, attempt(first, step + 1, time.time() - started)]
                save_state(resume / STATE, key, step + 1, rows, so_far, *loop)
    if resume is not None:
        save_attempts(resume, [*attempts, attempt(first, steps, time.time() - started)])
    standard_layout(net).eval()
    if ema is not None:
        net = copy.deepcopy(net)
        ema.copy_to(net.parameters())
    return net, to_csv(rows)
