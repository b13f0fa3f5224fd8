import os
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from pipeline.diffusion.sampler import ancestral_steps, sample, sample_generators

# torch.compile's CPU backend (inductor) builds C++ with $CXX, else g++
needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                    reason="torch.compile on the CPU needs a C++ compiler")

SCHEDULERS = {  # DDPMScheduler settings other than the project's (leading spacing, clipped x_0, fixed_small)
    "default": {},
    "no clipping": {"clip_sample": False},
    "fixed_large": {"variance_type": "fixed_large"},
    "steps_offset 1": {"steps_offset": 1},  # the last step is t = 1 > 0: it adds noise
    "trailing": {"timestep_spacing": "trailing"},
}


def pipeline_images(unet, scheduler, n, steps, seed):
    """DDPMPipeline's images with one generator per image, seeded as the project's sampler seeds them."""
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    generators = sample_generators(seed, range(n))
    return pipe(batch_size=n, generator=generators, num_inference_steps=steps, output_type="np").images


@pytest.mark.parametrize("settings", SCHEDULERS.values(), ids=SCHEDULERS.keys())
@pytest.mark.parametrize("steps", [5, 7])
def test_matches_diffusers_ddpm_pipeline(unet, scheduler, settings, steps):
    """The same per-image generators draw as in DDPMPipeline, so the very same images, in one batch
    or in two (7 steps do not divide T = 1000: t' = t - 142)."""
    scheduler = DDPMScheduler.from_config(scheduler.config, **settings)
    theirs = pipeline_images(unet, scheduler, 3, steps, seed=4)
    for batch_size in (3, 2):
        ours = sample(unet, scheduler, n=3, steps=steps, batch_size=batch_size, seed=4)
        np.testing.assert_allclose(ours.transpose(0, 2, 3, 1), theirs, atol=1e-5, rtol=0)


def test_a_sample_does_not_depend_on_the_batch_size_or_the_split(unet, scheduler):
    """Sample i is the same in any batch size, and when samples i.. are drawn by another job."""
    whole = sample(unet, scheduler, n=7, steps=4, batch_size=7, seed=1)
    for batch_size in (1, 3, 4):
        np.testing.assert_allclose(sample(unet, scheduler, n=7, steps=4, batch_size=batch_size, seed=1), whole,
                                   atol=1e-5, rtol=0)  # floating point: batched convolutions
    assert not np.allclose(whole[0], whole[1])  # each sample its own noise
    assert not np.allclose(sample(unet, scheduler, n=7, steps=4, batch_size=7, seed=2), whole)


@pytest.mark.parametrize("settings", SCHEDULERS.values(), ids=SCHEDULERS.keys())
def test_update_is_the_scheduler_step_to_the_bit(scheduler, settings):
    scheduler = DDPMScheduler.from_config(scheduler.config, **settings)
    plan = ancestral_steps(scheduler, 10)
    scheduler.set_timesteps(10)
    assert [s.t for s in plan] == scheduler.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g) * 1.5
    for step in plan:
        eps = torch.randn(x.shape, generator=g)
        state = g.get_state()
        expected = scheduler.step(eps, step.t, x, generator=g).prev_sample
        g.set_state(state)
        noise = torch.randn(x.shape, generator=g) if step.t > 0 else None
        assert torch.equal(step(x, eps, noise), expected), step.t
        x = expected


def test_unsupported_scheduler_settings_are_refused(scheduler):
    for settings in ({"variance_type": "learned_range"}, {"thresholding": True}):
        with pytest.raises(ValueError, match="DDPM sampling"):
            ancestral_steps(DDPMScheduler.from_config(scheduler.config, **settings), 5)


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


def test_channels_last_is_close_to_fp32_and_leaves_the_weights_as_they_were(unet, scheduler, one_torch_thread):
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    full = sample(unet, scheduler, n=4, steps=5, batch_size=4, seed=0)
    nhwc = sample(unet, scheduler, n=4, steps=5, batch_size=4, seed=0, channels_last=True)
    np.testing.assert_allclose(nhwc, full, atol=1e-5, rtol=0)
    both = sample(unet, scheduler, n=4, steps=5, batch_size=4, seed=0, precision="bf16", channels_last=True)
    np.testing.assert_allclose(both, full, atol=0.05)
    after = unet.state_dict()
    assert all(torch.equal(after[k], v) and after[k].is_contiguous() for k, v in before.items())
    assert not any(p.is_inference() for p in unet.parameters())  # still usable for training


@needs_compiler
def test_compiled_is_close_to_eager(unet, scheduler, one_torch_thread):
    full = sample(unet, scheduler, n=4, steps=3, batch_size=4, seed=0)
    compiled = sample(unet, scheduler, n=4, steps=3, batch_size=4, seed=0, compile=True)
    np.testing.assert_allclose(compiled, full, atol=1e-4, rtol=0)
