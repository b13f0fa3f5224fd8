import numpy as np
import torch
from diffusers import DDPMPipeline

from pipeline.sampling import sample


def test_matches_diffusers_ddpm_pipeline(unet, scheduler):
    """One batch: the same generator draws as DDPMPipeline, so the very same images."""
    ours = sample(unet, scheduler, n=3, steps=5, batch_size=3, seed=4)
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(4)
    theirs = pipe(batch_size=3, generator=generator, num_inference_steps=5, output_type="np").images
    np.testing.assert_allclose(ours.transpose(0, 2, 3, 1), theirs, atol=1e-5)


def test_seeded_shape_and_range(unet, scheduler):
    a = sample(unet, scheduler, n=5, steps=4, batch_size=2, seed=0)
    b = sample(unet, scheduler, n=5, steps=4, batch_size=2, seed=0)
    c = sample(unet, scheduler, n=5, steps=4, batch_size=2, seed=1)
    assert a.shape == (5, 1, 8, 8) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bf16_is_close_to_fp32(unet, scheduler, one_torch_thread):
    full = sample(unet, scheduler, n=4, steps=5, batch_size=4, seed=0)
    assert np.array_equal(sample(unet, scheduler, n=4, steps=5, batch_size=4, seed=0, precision="fp32"), full)
    half = sample(unet, scheduler, n=4, steps=5, batch_size=4, seed=0, precision="bf16")
    assert half.dtype == np.float32 and np.isfinite(half).all() and not np.array_equal(half, full)
    np.testing.assert_allclose(half, full, atol=0.05)
