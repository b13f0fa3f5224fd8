"""The unlearning methods by the names that params.yaml uses, and how one is built from its params.

Each name has its section ``methods.<name>`` in params (schema: pipeline/params/schema.yaml): the
training loop's keys (:data:`LOOP_KEYS`), the method's own hyperparameters (its constructor's
keyword arguments), and for a :class:`pipeline.methods.contract.ForgetTermMethod` the forget
filter's ``time`` and ``frequency``. tests/test_methods.py checks that the schema and these
classes agree.
"""

from __future__ import annotations

from diffusers import DDPMScheduler

from pipeline.methods.contract import ForgetTermMethod, Method
from pipeline.methods.filters import ForgetFilter
from pipeline.methods.losses import SISS, EraseDiff, NaiveDeletion, NegGrad, ReTrack, SISSNoIS

REGISTRY: dict[str, type[Method]] = {
    "naive": NaiveDeletion,
    "neggrad": NegGrad,
    "erasediff": EraseDiff,
    "siss": SISS,
    "siss_no_is": SISSNoIS,
    "retrack": ReTrack,
}
LOOP_KEYS = ("steps", "batch_size", "lr", "betas", "weight_decay", "eps", "accumulate", "checkpoint_every")
FILTER_KEYS = ("time", "frequency")


def has_forget_filter(name: str) -> bool:
    """Whether method ``name`` has a forget term that ``time`` and ``frequency`` can restrict."""
    return issubclass(REGISTRY[name], ForgetTermMethod)


def make_method(name: str, cfg: dict, scheduler: DDPMScheduler) -> Method:
    """The method ``name`` with its hyperparameters from ``cfg`` (``params['methods'][name]``, or
    a sweep cell's :meth:`pipeline.params.runs.Run.hyperparameters`), and for a method with a
    forget term, the forget filter of its ``time`` and ``frequency`` keys."""
    cls = REGISTRY[name]
    kwargs = {k: v for k, v in cfg.items() if k not in (*LOOP_KEYS, *FILTER_KEYS)}
    if has_forget_filter(name):
        kwargs["forget_filter"] = ForgetFilter(scheduler.config.num_train_timesteps, cfg.get("time"),
                                               cfg.get("frequency"))
    return cls(scheduler, **kwargs)
