"""pipeline.diffusion.models (UNet/scheduler, on-disk format) and the pretrained branch of the pretrain stage."""

import copy

import numpy as np
import pytest
import torch
import yaml
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler

from pipeline.diffusion.models import (
    build_unet,
    check_matches_data,
    compute_settings,
    load_model,
    noise_levels,
    prepare,
    save_model,
    standard_layout,
)
from pipeline.errors import UserError
from pipeline.stages import pretrain as pretrain_stage

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"




def unet_out(unet, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 8, 8, generator=g)
    t = torch.tensor([3, 700])
    with torch.no_grad():
        return unet(x, t).sample


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_build_unet_follows_params(unet):
    cfg = unet.config
    assert cfg.sample_size == 8 and cfg.in_channels == 1 and cfg.out_channels == 1
    assert tuple(cfg.down_block_types) == ("DownBlock2D", "AttnDownBlock2D")
    assert tuple(cfg.up_block_types) == ("AttnUpBlock2D", "UpBlock2D")
    assert [type(b).__name__ for b in unet.down_blocks] == ["DownBlock2D", "AttnDownBlock2D"]
    assert tuple(cfg.block_out_channels) == (16, 16)
    assert unet_out(unet).shape == (2, 1, 8, 8)


def test_build_unet_rgb(params):
    params["data"].update(resolution=16, channels=3)
    params["model"]["unet"]["attention"] = [True, False]
    cfg = build_unet(params).config
    assert (cfg.sample_size, cfg.in_channels, cfg.out_channels) == (16, 3, 3)
    assert tuple(cfg.down_block_types) == ("AttnDownBlock2D", "DownBlock2D")
    assert tuple(cfg.up_block_types) == ("UpBlock2D", "AttnUpBlock2D")


def test_scheduler_is_linear_epsilon_ddpm(scheduler):
    assert isinstance(scheduler, DDPMScheduler)
    assert scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.beta_schedule == "linear"
    assert scheduler.config.prediction_type == "epsilon"


def test_save_model_loads_with_diffusers_and_gives_same_outputs(tmp_path, unet, scheduler):
    save_model(tmp_path / "m", unet, scheduler, {"train_log.csv": "step,loss\n0,1.0\n"})
    assert (tmp_path / "m" / "train_log.csv").read_text() == "step,loss\n0,1.0\n"
    pipe = DDPMPipeline.from_pretrained(str(tmp_path / "m"))
    assert torch.equal(unet_out(pipe.unet.eval()), unet_out(unet))
    assert isinstance(pipe.scheduler, DDPMScheduler)
    loaded, sched = load_model(tmp_path / "m")
    assert same_weights(loaded, unet)
    assert sched.config.num_train_timesteps == 1000


def test_load_model_missing_dir_names_path(tmp_path):
    path = tmp_path / "no_model"
    with pytest.raises(UserError) as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_load_model_corrupt_weights_names_path(tmp_path, unet, scheduler, damage):
    path = tmp_path / "m"
    save_model(path, unet, scheduler)
    weights = path / WEIGHTS
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage":
        weights.write_bytes(b"\x00garbage" * 100)
    else:
        weights.unlink()
    with pytest.raises(UserError) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_load_model_replaces_ddim_scheduler(tmp_path, unet):
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000)).save_pretrained(tmp_path / "m")
    _, sched = load_model(tmp_path / "m")
    assert isinstance(sched, DDPMScheduler)


def test_load_model_rejects_v_prediction(tmp_path, unet):
    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path / "m")
    with pytest.raises(UserError, match="epsilon"):
        load_model(tmp_path / "m")


def test_check_matches_data(unet, params):
    check_matches_data(unet, params, "src")
    for key, value in [("resolution", 16), ("channels", 3)]:
        bad = copy.deepcopy(params)
        bad["data"][key] = value
        with pytest.raises(UserError, match="src") as info:
            check_matches_data(unet, bad, "src")
        assert f"data.{key}" in str(info.value) or "data.resolution/data.channels" in str(info.value)


def pretrained_params(tmp_path, params, hub):
    params["model"].update(source="pretrained", pretrained=str(hub))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_pretrain_copies_a_pretrained_model(tmp_path, params, unet, scheduler):
    hub = tmp_path / "hub_model"
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(hub)
    p = pretrained_params(tmp_path, params, hub)
    out = tmp_path / "models" / "pretrained"
    pretrain_stage.main(["--params", str(p), "--data", str(tmp_path / "unused.npz"), "--out", str(out)])
    pipe = DDPMPipeline.from_pretrained(str(out))
    assert same_weights(pipe.unet, unet)
    assert pipe.scheduler.config.num_train_timesteps == 1000


def test_pretrain_rejects_pretrained_model_of_wrong_resolution(tmp_path, params, unet, scheduler, capsys):
    hub = tmp_path / "hub_model"
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(hub)  # 8x8
    params["data"]["resolution"] = 16
    p = pretrained_params(tmp_path, params, hub)
    out = tmp_path / "models" / "pretrained"
    with pytest.raises(SystemExit) as info:
        pretrain_stage.main(["--params", str(p), "--data", str(tmp_path / "unused.npz"), "--out", str(out)])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_pretrain_missing_pretrained_path_exits_2(tmp_path, params, capsys):
    missing = tmp_path / "nowhere"
    p = pretrained_params(tmp_path, params, missing)
    with pytest.raises(SystemExit) as info:
        pretrain_stage.main(["--params", str(p), "--data", "unused.npz", "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_noise_levels_match_linear_schedule(scheduler):
    t = torch.tensor([0, 1, 10, 250, 500, 999])
    gamma, sigma = noise_levels(scheduler, t)
    assert gamma.shape == sigma.shape == (6, 1, 1, 1)
    gamma, sigma = gamma.flatten().double().numpy(), sigma.flatten().double().numpy()
    np.testing.assert_allclose(gamma**2 + sigma**2, 1.0, atol=1e-6)
    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = np.cumprod(1.0 - betas)
    np.testing.assert_allclose(gamma, np.sqrt(alpha_bar[t.numpy()]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sigma, np.sqrt(1.0 - alpha_bar[t.numpy()]), rtol=1e-4, atol=1e-6)
    assert gamma[0] > 0.99 and gamma[-1] < 0.01


def test_compute_settings_default_the_layout_options_to_off(params):
    assert compute_settings(params) == {"precision": "fp32", "channels_last": False, "compile": False}
    del params["compute"]["channels_last"], params["compute"]["compile"]  # a params file older than them
    assert compute_settings(params) == {"precision": "fp32", "channels_last": False, "compile": False}


def test_prepare_channels_last_keeps_values_mode_and_saved_format(tmp_path, unet, scheduler):
    expected, reference = unet_out(unet), copy.deepcopy(unet)
    net = prepare(unet, torch.device("cpu"), channels_last=True)
    assert net is unet and not unet.training  # in place, eval mode untouched
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert same_weights(unet, reference)
    torch.testing.assert_close(unet_out(unet), expected, atol=1e-5, rtol=0)
    save_model(tmp_path / "m", unet, scheduler)  # NHWC weights save as the usual contiguous safetensors
    assert same_weights(load_model(tmp_path / "m")[0], reference)
    assert standard_layout(unet) is unet and all(p.is_contiguous() for p in unet.parameters())


def test_prepare_compile_wraps_without_changing_the_saved_model(tmp_path, unet, scheduler):
    compiled = prepare(unet, torch.device("cpu"), compile=True)  # compiles lazily, on the first call
    assert compiled._orig_mod is unet and list(compiled.parameters()) == list(unet.parameters())
    save_model(tmp_path / "m", compiled, scheduler)  # diffusers unwraps it: no _orig_mod. keys
    assert same_weights(load_model(tmp_path / "m")[0], unet)
