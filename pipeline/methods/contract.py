"""What a method is, for the training loop: the batches it needs, its loss terms, its update.

Every objective the loop trains with (DDPM pretraining and each unlearning method) is a
:class:`Method`: its hyperparameters in ``__init__``, the math in ``__call__(net, batch)``, in the
style of NVlabs/edm ``training/loss.py``. ``__call__`` returns :class:`Losses`, one or more scalar
loss terms and the figures of this call for the per-step log. The loop takes one backward pass
per term through the same forward graph, averages each term's gradient over the micro-batches of
a step, and hands them (flattened, ``{term: g}``) to ``combine``, which returns the update
direction: the one term's gradient by default, a combination for SISS and EraseDiff.

A :class:`ForgetTermMethod` has a forget term that a :class:`pipeline.methods.filters.ForgetFilter`
restricts in time and frequency (params keys ``time`` and ``frequency``); without one it gets
the filter that keeps everything, so the method's numbers are its own.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from diffusers import DDPMScheduler

from pipeline.methods.filters import ForgetFilter


@dataclass
class Batch:
    """What one step sees. ``retain`` (B, C, H, W); ``forget`` (B, C, H, W) and its K nearest
    retain images ``neighbours`` (B, K, C, H, W); all in model space ([-1, 1], or a text-to-image
    model's latents). ``text`` (B, 77, D): the caption embedding of each retain example, when the
    training set is captioned (text-to-image pretraining)."""

    retain: torch.Tensor | None = None
    forget: torch.Tensor | None = None
    neighbours: torch.Tensor | None = None
    text: torch.Tensor | None = None


@dataclass
class Losses:
    """A method's result on one micro-batch: scalar loss ``terms`` (one backward pass each; a
    single-term method names its term ``loss``) and ``stats``, figures for the per-step log."""

    terms: dict[str, torch.Tensor]
    stats: dict[str, float] = field(default_factory=dict)


class Method(abc.ABC):
    """An objective of the training loop (module doc). ``needs``: the batches it draws, any of
    ``retain`` and ``forget`` (a forget batch brings its images' ``neighbours``)."""

    needs: ClassVar[tuple[str, ...]]

    def __init__(self, scheduler: DDPMScheduler):
        self.scheduler = scheduler

    @abc.abstractmethod
    def __call__(self, net, batch: Batch) -> Losses:
        """The loss terms of ``net`` on ``batch``."""

    def combine(self, grads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The update direction from the per-term gradients, and figures for the log: here the
        gradient of the single term."""
        (g,) = grads.values()
        return g, {}


class ForgetTermMethod(Method):
    """A method with a forget term, which ``forget_filter`` restricts (module doc)."""

    def __init__(self, scheduler: DDPMScheduler, forget_filter: ForgetFilter | None = None):
        super().__init__(scheduler)
        self.forget_filter = forget_filter or ForgetFilter(scheduler.config.num_train_timesteps)
