"""Models: the diffusers ``UNet2DModel`` + ``DDPMScheduler`` pair, and its on-disk format.

Every model of the workflow is a directory written by ``DDPMPipeline.save_pretrained``, so
``diffusers.DDPMPipeline.from_pretrained(path)`` loads any of them. The scheduler is DDPM with
T = ``num_train_timesteps`` (1000), linear betas 1e-4 -> 0.02 and epsilon prediction (Ho et al.
2020), as in the SISS and ReTrack MNIST/CIFAR/CelebA-HQ models.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from pipeline.artifacts import atomic_path
from pipeline.errors import UserError


def build_unet(params: dict) -> UNet2DModel:
    """A fresh UNet2DModel for the data's resolution and channels, from ``params['model']['unet']``."""
    cfg, data = params["model"]["unet"], params["data"]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg["attention"])
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg["attention"]))
    return UNet2DModel(
        sample_size=data["resolution"],
        in_channels=data["channels"],
        out_channels=data["channels"],
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"],
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg["norm_num_groups"],
    )


def build_scheduler(params: dict) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=params["model"]["num_train_timesteps"],
                         beta_schedule="linear", prediction_type="epsilon")


def scheduler_settings(scheduler: DDPMScheduler) -> dict:
    """The scheduler's configuration without diffusers' bookkeeping (the ``_`` keys: its version,
    and ``_use_default_values``, a list in set order that differs between processes)."""
    return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}


def write_model(directory: str | Path, unet: UNet2DModel, scheduler: DDPMScheduler,
                extra_files: dict[str, str] | None = None) -> None:
    """``DDPMPipeline.save_pretrained`` into ``directory``, with optional text files beside the
    weights (the training log ``train_log.csv``). Not atomic by itself: see :func:`save_model`."""
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(directory)
    for name, text in (extra_files or {}).items():
        (Path(directory) / name).write_text(text)


def save_model(path: str | Path, unet: UNet2DModel, scheduler: DDPMScheduler,
               extra_files: dict[str, str] | None = None) -> None:
    """:func:`write_model` to a temporary directory, renamed to ``path`` when complete."""
    with atomic_path(path, directory=True) as tmp:
        write_model(tmp, unet, scheduler, extra_files)


def load_model(path: str | Path) -> tuple[UNet2DModel, DDPMScheduler]:
    """Load a DDPMPipeline directory (local) or Hub id; errors name the path."""
    try:
        pipe = DDPMPipeline.from_pretrained(str(path))
    except (OSError, ValueError, EnvironmentError) as exc:
        raise UserError(f"{path}: not a loadable diffusers DDPMPipeline ({exc})") from exc
    if not isinstance(pipe.scheduler, DDPMScheduler):  # e.g. a DDIM-scheduled pipeline
        pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    if pipe.scheduler.config.prediction_type != "epsilon":
        raise UserError(f"{path}: the scheduler predicts {pipe.scheduler.config.prediction_type!r}; "
                        "the unlearning losses need epsilon prediction")
    return pipe.unet, pipe.scheduler


def check_matches_data(unet: UNet2DModel, params: dict, source: str) -> None:
    """A loaded model must fit the data's resolution and channels."""
    data = params["data"]
    size = unet.config.sample_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    if (size, unet.config.in_channels) != (data["resolution"], data["channels"]):
        raise UserError(f"{source}: model is {size}x{size} with {unet.config.in_channels} channels, but "
                        f"data.resolution/data.channels are {data['resolution']}/{data['channels']}")


def weight_distance(unet: torch.nn.Module, reference: torch.nn.Module) -> float:
    """||theta - theta_ref||_2 / ||theta_ref||_2 over every parameter of two models of one
    architecture (float64 sums): how far unlearning moved a model from where it started."""
    ref = dict(reference.named_parameters())
    moved = sum(float((p.detach().double() - ref[name].detach().double()).pow(2).sum())
                for name, p in unet.named_parameters())
    size = sum(float(p.detach().double().pow(2).sum()) for p in ref.values())
    return (moved / size) ** 0.5


def noise_levels(scheduler: DDPMScheduler, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gamma_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t), shaped (B, 1, 1, 1)."""
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t].float()
    return alpha_bar.sqrt().view(-1, 1, 1, 1), (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)


def device() -> torch.device:
    """CUDA when present, else the CPU with one torch thread per core this process may run on
    (its CPU affinity, e.g. a SLURM allocation, not the whole node). Locally, the rules that train
    or sample take all of Snakemake's cores, so two of them never compete for the same cores.

    ``cuda`` means torch's current device, the first of those ``CUDA_VISIBLE_DEVICES`` leaves
    visible (torch numbers only the visible ones), so the scheduler's GPU assignment is respected."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    return torch.device("cpu")


def compute_settings(params: dict) -> dict:
    """How the UNet runs, from ``params['compute']``, as keyword arguments of
    :func:`pipeline.diffusion.sampler.sample` and :func:`pipeline.training.loop.train`: ``precision``, and
    ``channels_last`` and ``compile`` (false when absent, as in params files older than them)."""
    compute = params["compute"]
    return {"precision": compute["precision"], "channels_last": compute.get("channels_last", False),
            "compile": compute.get("compile", False)}


def prepare(unet: UNet2DModel, device: torch.device, channels_last: bool = False,
            compile: bool = False) -> torch.nn.Module:
    """``unet`` ready to run on ``device``, its train/eval mode untouched: moved there and, when
    asked, its 4-D weights put in channels_last (NHWC) memory format, in place (their values do not
    change), and the module to call wrapped by ``torch.compile`` (default mode; compiled on the
    first call, which needs a C++ compiler on the CPU and Triton on a GPU).

    oneDNN (CPU) and cuDNN run a convolution in NHWC when its input or its weight is NHWC, and
    the NHWC output carries the format through the network, so the weights are enough: inputs need
    no conversion. A compiled module shares ``unet``'s parameters but holds it as ``_orig_mod``
    (state_dict keys prefixed with it): save and checkpoint ``unet`` itself (diffusers'
    ``save_pretrained`` unwraps a compiled module too). :func:`standard_layout` undoes the format."""
    unet.to(device)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    return torch.compile(unet) if compile else unet


def standard_layout(unet: torch.nn.Module) -> torch.nn.Module:
    """``unet`` with its weights back in the default contiguous (NCHW) memory format, in place."""
    return unet.to(memory_format=torch.contiguous_format)


def autocast(precision: str, device: torch.device):
    """The context for the UNet's forward passes under ``compute.precision``: ``bf16``, bfloat16
    autocast on ``device``'s type (CUDA or CPU), which roughly halves the activations' memory and
    time on recent GPUs; ``fp32``, a no-op, so that full precision is exactly the plain forward."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision {precision!r}: expected 'fp32' or 'bf16'")
