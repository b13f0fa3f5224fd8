"""Unlearning a memorized prompt: the batches come from the starting model's own generations of it.

In the text-to-image protocol (methods.md, Stable Diffusion) the forget set A is the prompt's
memorized generations and the retain set X its other generations, both as VAE latents
z = s * E(x). A step draws latents of A and X as the pixel-space methods draw images, and each
forget latent brings its K nearest latents of X (exact L2 search, faiss) for ReTrack: the
neighbours of the same prompt, as the ReTrack code takes them. The UNet sees the prompt through
:class:`pipeline.diffusion.text_to_image.Conditioned`.
"""

from __future__ import annotations

import numpy as np

from pipeline.diffusion.text_to_image import add_lora
from pipeline.errors import UserError
from pipeline.search.neighbours import exact_search
from pipeline.training.loop import BatchSource


def prompt_source(forget: np.ndarray, retain: np.ndarray, k: int) -> BatchSource:
    """A :class:`BatchSource` over the latents of A (``forget``, (|A|, c, h, w)) and X
    (``retain``), each forget latent its own group with its ``k`` nearest retain latents."""
    if not len(forget) or not len(retain):
        raise UserError(f"a prompt's forget and retain sets must both have generations: found {len(forget)} "
                        f"memorized and {len(retain)} other generations")
    if k > len(retain):
        raise UserError(f"{k} nearest retain latents asked for among only {len(retain)}")
    latents = np.concatenate([forget, retain]).astype(np.float32)
    vectors = latents.reshape(len(latents), -1)
    rows, _ = exact_search(vectors[len(forget):], vectors[:len(forget)], k)
    return BatchSource(latents, retain_rows=np.arange(len(forget), len(latents)), forget_rows=np.arange(len(forget)),
                       forget_group=np.arange(len(forget)), neighbours=rows + len(forget))


def trainable_unet(pipe, cfg: dict):
    """The pipeline's UNet set up to unlearn as ``text_to_image`` params say: every weight trains
    (``train: full``, the reference codes) or only LoRA adapters (``train: lora``,
    :func:`pipeline.diffusion.text_to_image.add_lora`, with ``lora.rank`` and ``lora.alpha``), and
    with ``gradient_checkpointing`` its blocks' activations are recomputed in the backward pass
    instead of kept (diffusers' ``enable_gradient_checkpointing``): memory for about a third more
    arithmetic (docs/benchmarks/sd_cost.md)."""
    unet = pipe.unet
    if cfg["train"] == "lora":
        add_lora(unet, cfg["lora"]["rank"], cfg["lora"]["alpha"])
    else:
        unet.requires_grad_(True)
    if cfg["gradient_checkpointing"]:
        unet.enable_gradient_checkpointing()
    return unet
