"""What one unlearning run on Stable Diffusion v1.4 costs, counted on the CPU without a download.

The SD v1.4 UNet (859.5 M parameters, :data:`pipeline.diffusion.text_to_image.SD14_UNET`) is built
on PyTorch's meta device (shapes, no memory, no arithmetic), and each method's micro-batch (one
4x64x64 latent per image, a 77x768 prompt embedding) is run through it the way
:mod:`pipeline.methods.losses` does, forward and backward:

- **FLOPs**, counted by ``torch.utils.flop_counter.FlopCounterMode`` over the whole micro-batch,
  backward passes and gradient checkpointing's recomputation included;
- **activations**: the bytes autograd saves for the backward (``saved_tensors_hooks``), all of the
  micro-batch's graphs at once, as the training loop holds them; with gradient checkpointing, the
  saved inputs of the checkpointed blocks plus the largest block recomputed during the backward;
- **state**, from the training loop's code (:mod:`pipeline.training.loop`), for T trainable
  parameters in fp32: the weights (4 bytes each, all 859.5 M), AdamW's two moments (8 T), one
  flat gradient sum per loss term (4 T each), and, at the last backward, the per-parameter
  gradients and their flat copy (8 T). The frozen VAE and text encoder are not counted: the
  latents and the prompt's embedding are computed once, before training.

Full fine-tuning trains all 859.5 M; LoRA (rank ``--rank`` on the attention projections,
:func:`pipeline.diffusion.text_to_image.add_lora`) trains only the adapters, whose own arithmetic
(under 1 %) is left out: the backward still carries gradients through every layer to them, but
computes no weight gradient for the frozen weights. Times assume a sustained throughput
(``--tflops``; 200 TFLOP/s is a fair figure for bf16 on one H100/H200, fp32 runs several times
slower) and the references' budget: 16 micro-batches of one image per step, 35 steps (SISS,
the default for the others too) or 30 (ReTrack). A batch of one image keeps a GPU far from its
sustained throughput, so real runs take several times longer than these times. Figures are counts,
not measurements: when a GPU is lent, ``benchmarks/gpu_check.sh`` measures a step. Last, the
cost of the protocol's generations per prompt (50 guided steps).

    python benchmarks/sd_cost.py [--rank 16] [--tflops 200]
"""

from __future__ import annotations

import argparse

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from torch.utils.flop_counter import FlopCounterMode

from pipeline.diffusion.text_to_image import LORA_TARGETS, SD14_UNET
from pipeline.diffusion.tokenizer import MAX_LENGTH

GIB = 2**30
ACCUMULATE = 16
GENERATION_STEPS = 50
# How each method runs the UNet on a micro-batch of one image per set (pipeline/methods/losses.py):
# forward calls (images per call) and the loss terms, each one backward pass.
PATTERNS = {
    "naive, NegGrad": {"calls": [1], "terms": 1, "steps": 35},
    "SISS (one call, two terms)": {"calls": [1], "terms": 2, "steps": 35},
    "EraseDiff, SISS-no-IS (two calls, two terms)": {"calls": [1, 1], "terms": 2, "steps": 35},
    "ReTrack (one call on both images)": {"calls": [2], "terms": 1, "steps": 30},
}
CHECKPOINTED = (ResnetBlock2D, BasicTransformerBlock)  # what diffusers' gradient checkpointing recomputes


def lora_parameters(unet: torch.nn.Module, rank: int) -> int:
    """rank * (in + out) for every attention projection LoRA adapts."""
    return sum(rank * (m.in_features + m.out_features) for name, m in unet.named_modules()
               if isinstance(m, torch.nn.Linear) and any(name.endswith(t) for t in LORA_TARGETS))


def micro_batch(unet, pattern: dict, lora: bool) -> tuple[float, int]:
    """FLOPs and saved-activation bytes of one micro-batch of ``pattern``."""
    unet.requires_grad_(not lora)
    saved = [0]

    def pack(x):
        saved[0] += x.numel() * x.element_size()
        return x

    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            preds = [call(unet, n, lora) for n in pattern["calls"]]
        terms = [p.pow(2).mean() for p in preds] if len(preds) > 1 else [preds[0].pow(2).mean() * (i + 1)
                                                                          for i in range(pattern["terms"])]
        for i, term in enumerate(terms):
            term.backward(retain_graph=i + 1 < len(terms))
    return counter.get_total_flops(), saved[0]


def call(unet, images: int, lora: bool) -> torch.Tensor:
    """eps_theta on ``images`` latents; with LoRA the input carries the gradient (as adapters would)."""
    z = torch.randn(images, 4, 64, 64, device="meta", requires_grad=lora)
    c = torch.randn(images, MAX_LENGTH, SD14_UNET["cross_attention_dim"], device="meta")
    return unet(z, torch.full((images,), 500, device="meta"), encoder_hidden_states=c).sample


def largest_block(unet) -> int:
    """Saved-activation bytes of the largest checkpointed block, for one image."""
    sizes, current = [], [0]

    def pack(x):
        current[0] += x.numel() * x.element_size()
        return x

    def start(*_):
        current[0] = 0

    def end(*_):
        sizes.append(current[0])

    hooks = [h for m in unet.modules() if isinstance(m, CHECKPOINTED)
             for h in (m.register_forward_pre_hook(start), m.register_forward_hook(end))]
    unet.requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        call(unet, 1, lora=False)
    for h in hooks:
        h.remove()
    return max(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--tflops", type=float, default=200.0, help="sustained throughput assumed, TFLOP/s")
    args = parser.parse_args()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD14_UNET).train()
    total = sum(p.numel() for p in unet.parameters())
    adapters = lora_parameters(unet, args.rank)
    block = largest_block(unet)
    print(f"SD v1.4 UNet: {total / 1e6:.1f} M parameters; LoRA rank {args.rank}: {adapters / 1e6:.2f} M; "
          f"largest checkpointed block: {block / GIB:.2f} GiB of activations per image; "
          f"times at {args.tflops:.0f} TFLOP/s sustained\n")
    print("| method | training | checkpointing | TFLOP per micro-batch | activations GiB | state GiB | "
          "peak GiB (fits 80 GB) | TFLOP per run | seconds per run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, pattern in PATTERNS.items():
        for lora in (False, True):
            trainable = adapters if lora else total
            state = 4 * total + (8 + 4 * pattern["terms"] + 8) * trainable
            for checkpointing in (False, True):
                (unet.enable_gradient_checkpointing if checkpointing else unet.disable_gradient_checkpointing)()
                flops, saved = micro_batch(unet, pattern, lora)
                activations = saved + (block * max(pattern["calls"]) if checkpointing else 0)
                peak = (state + activations) / GIB
                run = flops * ACCUMULATE * pattern["steps"]
                print(f"| {name} | {'LoRA' if lora else 'full'} | {'yes' if checkpointing else 'no'} | "
                      f"{flops / 1e12:.2f} | {activations / GIB:.1f} | {state / GIB:.1f} | "
                      f"{peak:.1f} ({'yes' if peak * GIB <= 80e9 else 'no'}) | {run / 1e12:,.0f} | "
                      f"{run / (args.tflops * 1e12):.0f} |")
    generation(unet, args.tflops)


def generation(unet, tflops: float) -> None:
    """The protocol's generations per prompt, each step one UNet call on the doubled batch
    (classifier-free guidance)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call(unet, 1, lora=False)
    forward = counter.get_total_flops()
    for what, images in (("forget and retain sets: 128 generations of the prompt", 128),
                         ("evaluation, per model: 16 of the prompt and 16 of the modified prompt", 32)):
        flops = images * GENERATION_STEPS * 2 * forward
        print(f"\n{what}, {GENERATION_STEPS} steps, guided: {flops / 1e15:.1f} PFLOP, "
              f"{flops / (tflops * 1e12):.0f} s", end="")
    print(f"\n\n(one forward pass of one image: {forward / 1e9:.0f} GFLOP)")


if __name__ == "__main__":
    main()
