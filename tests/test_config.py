import copy

import pytest
import yaml

from pipeline.config import UserError, load_params, model_names, validate
from tests.conftest import ROOT


def test_default_and_tiny_params_are_valid(params):
    validate(params)
    default = load_params(ROOT / "params.yaml")
    assert model_names(default)[0] == "pretrained"
    assert len(model_names(default)) == 1 + len(default["experiment"]["methods"]) * len(default["experiment"]["seeds"])


def error_of(params) -> str:
    with pytest.raises(UserError) as info:
        validate(params)
    return str(info.value)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda p: p["methods"]["retrack"].update(lr="fast"), "methods.retrack.lr: got 'fast', expected type number"),
        (lambda p: p["methods"]["retrack"].update(lr=-1.0), "methods.retrack.lr"),
        (lambda p: p["methods"]["retrack"].update(lamda=0.1), "unknown key 'lamda' in methods.retrack"),
        (lambda p: p["methods"]["siss"].pop("scaling_norm"), "methods.siss: 'scaling_norm' is a required property"),
        (lambda p: p["methods"]["siss"].update(lam=1.5), "methods.siss.lam: 1.5 is greater than the maximum of 1"),
        (lambda p: p["methods"]["naive"].update(accumulate=0), "methods.naive.accumulate: 0 is less than"),
        (lambda p: p["methods"].update(fancy={}), "unknown key 'fancy' in methods"),
        (lambda p: p["experiment"].update(retrain="yes"), "experiment.retrain: got 'yes', expected type boolean"),
        (lambda p: p["data"].update(resolutoin=8), "unknown key 'resolutoin' in data"),
        (lambda p: p.update(extra={}), "unknown key 'extra' at the top level"),
        (lambda p: p["data"].update(channels=2), "data.channels: got 2, expected one of [1, 3]"),
        (lambda p: p["sampling"].update(n=0), "sampling.n: 0 is less than the minimum of 1"),
        (lambda p: p["pretrain"].pop("steps"), "'steps' is a required property"),
        (lambda p: p["experiment"].update(methods=["nope"]), "experiment.methods: unknown method 'nope'"),
        (lambda p: p["data"]["source"].update(kind="folder"), "data.source.path: required"),
        (lambda p: p["model"].update(source="pretrained"), "model.pretrained: required"),
        (lambda p: p["forget"].update(strategy="label"), "forget.label: required"),
        (lambda p: p["model"]["unet"].update(attention=[True]), "model.unet.attention: needs one entry per"),
    ],
)
def test_bad_params_name_the_key(params, edit, expected):
    bad = copy.deepcopy(params)
    edit(bad)
    message = error_of(bad)
    assert expected in message
    assert "\n" not in message


def test_load_params_names_the_file(tmp_path):
    with pytest.raises(UserError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match=f"{broken}: not valid YAML"):
        load_params(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(UserError, match="expected a mapping"):
        load_params(listy)
