import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.diffusion.models import build_scheduler, build_unet
from pipeline.params.validation import resolve

ROOT = Path(__file__).resolve().parents[1]
TINY = Path(__file__).with_name("tiny_params.yaml")


@pytest.fixture
def params() -> dict:
    """A fresh copy of the tiny experiment's complete params (8x8 grey images, 2-level UNet), merged
    over the defaults as the stages read them."""
    return resolve(yaml.safe_load(TINY.read_text()))


@pytest.fixture
def unet(params):
    torch.manual_seed(0)
    return build_unet(params).eval()


@pytest.fixture
def scheduler(params):
    return build_scheduler(params)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: tiny models are slower with more, badly so on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def alpha_bar(t, T: int = 1000):
    """DDPM's alpha_bar_t for linear betas 1e-4 -> 0.02 over T steps, from the formula, float64."""
    return np.cumprod(1 - np.linspace(1e-4, 0.02, T, dtype=np.float64))[np.asarray(t)]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _drop_stage_log_handlers():
    """A stage's CLI logs to the stderr of its moment (pytest's capture); drop that handler after."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(handler)
