"""Shared by the benchmark scripts: which compute variants run on this machine."""

from __future__ import annotations

from typing import Callable

# keyword arguments of pipeline.diffusion.sampler.sample and pipeline.training.loop.train, beside plain fp32
VARIANTS = {
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16 + channels_last": {"precision": "bf16", "channels_last": True},
    "compile": {"compile": True},
    "compile + channels_last": {"compile": True, "channels_last": True},
    "compile + bf16 + channels_last": {"compile": True, "precision": "bf16", "channels_last": True},
}


def try_variants(variants: dict[str, dict], run: Callable[[dict], object]) -> tuple[dict[str, dict], dict[str, str]]:
    """Call ``run(options)`` once for each variant (warm-up: allocator, kernels, compilation);
    return the variants that ran, and those that failed with the reason."""
    ran, failed = {}, {}
    for name, options in variants.items():
        try:
            run(options)
            ran[name] = options
        except Exception as exc:  # torch.compile's backends raise many kinds (no compiler, no Triton)
            failed[name] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:200]
    return ran, failed
