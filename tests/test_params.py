import copy
import re

import pytest
import yaml

from pipeline.errors import UserError
from pipeline.params.runs import RUN_PATTERN, Run, model_names, runs
from pipeline.params.tracking import STAGE_KEYS, lookup, stage_keys
from pipeline.params.validation import defaults, load_params, merged, read_changes, resolve, schema, validate
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
        (lambda p: p["forget"].update(strategy="files"), "forget.files: required"),
        (lambda p: p["forget"].update(strategy="random", random=None), "forget.random: got None, expected type object"),
        (lambda p: p["forget"].update(strategy="everything"), "forget.strategy: got 'everything', expected one of"),
        (lambda p: p["forget"].update(duplicated={"threshold": 0.1, "min_size": 1, "max_clusters": 2}),
         "forget.duplicated.min_size: 1 is less than the minimum of 2"),
        (lambda p: p["knn"]["index"].update(kind="lsh"), "knn.index.kind: got 'lsh', expected one of"),
        (lambda p: p["knn"].update(k=0), "knn.k: 0 is less than the minimum of 1"),
        (lambda p: p["knn"].update(space="latent"), "knn.encoder: required when knn.space is 'latent'"),
        (lambda p: p["experiment"].update(requests=["q1.yaml"]),
         "experiment.requests: needs forget.strategy 'request' (the forget set is the requests' union), "
         "not 'injected'"),
        (lambda p: (p["forget"].update(strategy="request", request={"file": "q.yaml", "near_duplicates": 0.1}),
                    p["experiment"].update(requests=["q1.yaml"])), "forget.request.file: must be null with"),
        (lambda p: (p["forget"].update(strategy="request"),
                    p["experiment"].update(requests=["q1.yaml"], per_image=True)),
         "experiment.requests: a sequence of requests cannot be combined with experiment.per_image"),
        (lambda p: p["metrics"]["trajectory"].update(samples=41),
         "metrics.trajectory.samples: 41 must be at most sampling.n = 40"),
        (lambda p: p["experiment"].update(requests=["q1.yaml", "q1.yaml"]),
         "experiment.requests: ['q1.yaml', 'q1.yaml']"),
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


EXPERIMENTS = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/params.yaml"))


# --- run names and the time/frequency sweep ----------------------------------------------------------

NAMED_RUNS = [
    ("retrack-s0", Run("retrack", 0)),
    ("siss_no_is+t250-750-s3", Run("siss_no_is", 3, (250, 750))),
    ("retrack+r2-s1", Run("retrack", 1, None, 2.0)),
    ("retrack+t0-499+r2.5-s0", Run("retrack", 0, (0, 499), 2.5)),
    ("siss-s2-i7", Run("siss", 2, image=7)),
    ("retrack+t250-750-s0-i10", Run("retrack", 0, (250, 750), image=10)),
    ("naive-s1-q2", Run("naive", 1, request=2)),
]


@pytest.mark.parametrize("name, run", NAMED_RUNS)
def test_run_name_round_trip(name, run):
    parsed = Run.parse(name)
    assert (parsed.method, parsed.seed, parsed.window, parsed.radius, parsed.image) == \
        (run.method, run.seed, run.window, run.radius, run.image)
    assert parsed == run
    assert parsed.name == name
    assert run.name == name
    assert re.fullmatch(RUN_PATTERN, name)


@pytest.mark.parametrize("bad", ["retrack", "retrack-s", "Retrack-s0", "retrack+t5-s0", "retrack+r-s0",
                                 "retrack+r2+t0-4-s0", "retrack-s0x", "retrack s0", "retrack+t1-2+r3-s-1",
                                 "retrack-i1-s0", "retrack-s0-i", "retrack-s0-i1-i2", "retrack-q1-s0", "retrack-s0-q",
                                 "retrack-s0-q1-i2"])
def test_run_parse_rejects_bad_names(bad):
    with pytest.raises(UserError, match="not a run name"):
        Run.parse(bad)
    assert not re.fullmatch(RUN_PATTERN, bad)


def test_run_hyperparameters(params):
    original = copy.deepcopy(params)
    assert Run("retrack", 0).hyperparameters(params) == params["methods"]["retrack"]
    own = copy.deepcopy(params)
    own["methods"]["retrack"].update(time={"window": [10, 20], "soft": 3.0}, frequency={"radius": 1.0})
    assert Run("retrack", 0).hyperparameters(own) == own["methods"]["retrack"]  # the plain run keeps its own
    cell = Run("retrack", 1, (0, 499), 2.0).hyperparameters(own)
    assert cell == {**params["methods"]["retrack"], "time": {"window": [0, 499], "soft": None},
                    "frequency": {"radius": 2.0, "radius_at_T": None}}
    assert Run("retrack", 1, (0, 499)).hyperparameters(own) == {
        **params["methods"]["retrack"], "time": {"window": [0, 499], "soft": None}, "frequency": None}
    assert Run("retrack", 1, None, 3.0).hyperparameters(own) == {
        **params["methods"]["retrack"], "time": None, "frequency": {"radius": 3.0, "radius_at_T": None}}
    assert params == original  # nothing mutated
    own["methods"]["retrack"] = cell
    validate(own)


def sweep_params(params):
    p = copy.deepcopy(params)
    p["experiment"].update(seeds=[0, 1], sweep={"methods": ["retrack"], "windows": [None, [0, 499]],
                                                "radii": [None, 2]})
    return p


def test_runs_and_model_names_with_a_sweep(params):
    p = validate(sweep_params(params))
    assert model_names(p) == [
        "pretrained", "retrained", "naive-s0", "naive-s1", "retrack-s0", "retrack-s1",
        "retrack+r2-s0", "retrack+r2-s1",
        "retrack+t0-499-s0", "retrack+t0-499-s1",
        "retrack+t0-499+r2-s0", "retrack+t0-499+r2-s1",
    ]
    assert [r.name for r in runs(p)] == model_names(p)[2:]
    assert all(re.fullmatch(RUN_PATTERN, r.name) for r in runs(p))
    assert all(Run.parse(r.name) == r for r in runs(p))


def test_sweep_of_a_method_outside_experiment_methods(params):
    p = sweep_params(params)
    p["experiment"]["sweep"].update(methods=["neggrad"], windows=[None], radii=[None, 1.5])
    assert model_names(validate(p)) == ["pretrained", "retrained", "naive-s0", "naive-s1", "retrack-s0",
                                        "retrack-s1", "neggrad-s0", "neggrad-s1", "neggrad+r1.5-s0",
                                        "neggrad+r1.5-s1"]


def test_bad_sweep_names_the_key(params):
    p = sweep_params(params)
    p["experiment"]["sweep"]["methods"] = ["naive"]
    assert "experiment.sweep.methods" in error_of(p)
    p = sweep_params(params)
    p["experiment"]["sweep"]["windows"] = [None, [0, 1000]]
    assert "experiment.sweep.windows" in error_of(p)
    p = sweep_params(params)
    p["experiment"]["sweep"]["windows"] = [[500, 400]]
    assert "experiment.sweep.windows" in error_of(p)


# --- per-image runs (experiment.per_image) -------------------------------------------------------------


@pytest.mark.parametrize("forget, count", [
    ({"strategy": "indices", "indices": [5, 9, 5]}, 2),
    ({"strategy": "files", "files": ["a.png", "b.png", "c.png"]}, 3),
    ({"strategy": "random", "random": {"k": 4, "seed": 0}}, 4),
    ({"strategy": "injected"}, 1),
])
def test_per_image_runs_each_forget_image(params, forget, count):
    params["forget"].update(forget)
    params["experiment"].update(methods=["naive", "retrack"], seeds=[0, 1], retrain=False, per_image=True,
                                sweep={"methods": [], "windows": [None], "radii": [None]})
    validate(params)
    names = [run.name for run in runs(params)]
    assert len(names) == 2 * 2 * count
    assert names[:count] == [f"naive-s0-i{i}" for i in range(count)]
    assert model_names(params) == ["pretrained", *names]
    params["experiment"]["per_image"] = False
    assert [run.name for run in runs(params)] == ["naive-s0", "naive-s1", "retrack-s0", "retrack-s1"]


def test_per_image_needs_a_counted_strategy_and_no_retrain(params):
    params["experiment"].update(per_image=True, retrain=False)
    params["forget"].update(strategy="label", label=3)
    assert "experiment.per_image: needs a forget.strategy" in error_of(params)
    params["forget"].update(strategy="injected")
    params["experiment"]["retrain"] = True
    assert "experiment.retrain: one retrained model per forget image" in error_of(params)


def test_a_sequence_of_requests_runs_each_method_and_seed_once_per_request_from_the_previous_step(params):
    params["forget"].update(strategy="request")
    params["experiment"].update(methods=["naive", "retrack"], seeds=[0, 1], requests=["q1.yaml", "q2.yaml"])
    params["experiment"]["sweep"]["methods"] = []
    names = [run.name for run in runs(validate(params))]
    assert names == ["naive-s0", "naive-s1", "retrack-s0", "retrack-s1", "naive-s0-q1", "naive-s0-q2", "naive-s1-q1",
                     "naive-s1-q2", "retrack-s0-q1", "retrack-s0-q2", "retrack-s1-q1", "retrack-s1-q2"]
    assert [Run.parse(n).previous for n in ("retrack-s1-q1", "retrack-s1-q2", "retrack-s1")] == [
        "pretrained", "retrack-s1-q1", "pretrained"]
    assert Run.parse("retrack-s1-q2").variant == "retrack-q2" and Run.parse("retrack-s1").variant == "retrack"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_benchmark_params_are_valid(name):
    params = load_params(ROOT / "experiments" / name / "params.yaml")
    if params["model"]["kind"] == "text_to_image":  # one run per method x seed x prompt
        from pipeline.data.prompts import read_prompts
        from pipeline.params.runs import prompt_runs

        prompts = read_prompts(ROOT / "experiments" / name / params["text_to_image"]["prompts"])
        assert len(prompt_runs(params, len(prompts))) == {"memorized-prompts": 6 * 2}[name]
        return
    expected = {"mnist-tshirt": 6 * 3, "cifar10": 5 * 10, "celebahq": 5 * 10, "requests": 2 * 3 * 3}[name]
    assert len(runs(params)) == expected


# --- params with defaults: one defaults file, experiments hold only what they change ---------------


def leaves(tree: dict, prefix: str = "") -> dict:
    """Every non-mapping value of ``tree`` by its dotted key."""
    out = {}
    for key, value in tree.items():
        out.update(leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def test_merged_merges_mappings_and_replaces_everything_else():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": {"z": 3}, "c": 4}
    changes = {"a": {"y": [5]}, "b": None, "d": {"w": 6}}
    assert merged(base, changes) == {"a": {"x": 1, "y": [5]}, "b": None, "c": 4, "d": {"w": 6}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": {"z": 3}, "c": 4}  # untouched


@pytest.mark.parametrize("path", ["params.yaml", *(f"experiments/{e}/params.yaml" for e in
                                                   EXPERIMENTS)])
def test_an_experiment_holds_only_what_differs_from_the_defaults(path):
    changes = leaves(read_changes(ROOT / path))
    default = leaves(defaults(read_changes(ROOT / path).get("model", {}).get("kind", "ddpm")))
    repeated = sorted(key for key, value in changes.items() if key in default and default[key] == value)
    assert repeated == [], f"{path} repeats defaults: {repeated}"
    assert load_params(ROOT / path) == resolve(read_changes(ROOT / path))


def test_the_defaults_name_every_key_of_the_schema():
    """Every key the schema knows has its default (optional keys of a method or an index aside)."""
    def keys(schema: dict, prefix: str = "") -> set[str]:
        out = set()
        for name, sub in schema.get("properties", {}).items():
            if sub.get("type") == "object" and "properties" in sub and not name.startswith(("time", "frequency")):
                out |= keys(sub, f"{prefix}{name}.")
            else:
                out.add(f"{prefix}{name}")
        return out
    optional = {"accumulate", "checkpoint_every", "time", "frequency", "nlist", "nprobe", "hnsw_m", "ef_search",
                "pq_m", "recall_queries"}
    default = set(leaves(defaults())) | {k.rsplit(".", 1)[0] for k in leaves(defaults())}
    missing = sorted(k for k in keys(schema()) if k not in default and k.rsplit(".", 1)[-1] not in optional)
    assert missing == []


def test_empty_params_file_gets_the_defaults_and_one_message(tmp_path):
    (tmp_path / "params.yaml").write_text("# nothing changed\n")
    with pytest.raises(UserError, match="forget.strategy: 'injected' needs at least one image in data.inject"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("data: {inject: [{image: tshirt, copies: 3}]}\n")
    assert load_params(tmp_path / "params.yaml")["methods"] == defaults()["methods"]


@pytest.mark.parametrize("path", ["params.yaml", "tests/tiny_params.yaml",
                                  *(f"experiments/{e}/params.yaml" for e in EXPERIMENTS)])
def test_every_tracked_key_exists(path):
    params = load_params(ROOT / path)
    for rule in STAGE_KEYS:
        wildcards = {"run": runs(params)[0].name}
        for key in stage_keys(rule, params, wildcards):
            lookup(params, key)  # a KeyError names a key that no stage could read


def test_a_rule_tracks_only_the_keys_its_stage_reads(params):
    assert stage_keys("report", params) == ["experiment.seeds", "experiment.per_image", "experiment.sweep",
                                            "metrics.memorization.ratio", "metrics.probe.t", "metrics.probe.draws",
                                            "metrics.trajectory"]
    assert "metrics.trajectory" not in stage_keys("metrics", params)
    assert "metrics.trajectory.deleted_rate" not in stage_keys("trajectory", params)
    assert stage_keys("unlearn", params, {"run": "siss+t0-499-s1"}) == ["methods.siss", "compute.precision"]
    assert "pretrain" not in stage_keys("pretrain", {**params, "model": {**params["model"], "source": "pretrained"}})


# --- what params alone decide about the size of the data is checked before any compute -------------


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["knn"].update(k=301), "knn.k: 301 neighbours asked for, but the retain set has at most 300 images"),
    (lambda p: (p["forget"].update(strategy="random"), p["knn"].update(k=298)), None),  # 300 + 30 - 10 = 320
    (lambda p: (p["forget"].update(strategy="random"), p["knn"].update(k=321)), "the retain set has at most 320"),
    (lambda p: p["forget"].update(strategy="random", random={"k": 300, "seed": 0}), "forget.random.k: 300 images"),
    (lambda p: p["data"].update(heldout=10001), "data.heldout: 10001 held-out images requested, but the test split"),
    (lambda p: p["data"]["source"].update(limit=None) or p["knn"].update(k=60001), "at most 60000 images"),
    (lambda p: p["data"].update(source={"kind": "folder", "path": "x", "limit": None}) or p["knn"].update(k=10**6),
     None),  # a folder's size is known only from its files: the knn stage checks it
])
def test_data_sizes_that_params_fix_are_checked_before_compute(params, edit, expected):
    edit(params)
    if expected is None:
        validate(params)
    else:
        assert expected in error_of(params)


def test_a_text_to_image_experiment_takes_the_reference_codes_stable_diffusion_budgets():
    from pipeline.params.runs import prompt_runs

    params = resolve({"model": {"kind": "text_to_image"}, "text_to_image": {"prompts": "p.jsonl"}})
    siss, retrack = params["methods"]["siss"], params["methods"]["retrack"]
    budget = (siss["batch_size"], siss["accumulate"], siss["lr"], siss["steps"], siss["scaling_norm"])
    assert budget == (1, 16, 1e-5, 35, 750)
    assert (retrack["steps"], retrack["lam"], params["methods"]["erasediff"]["eta"]) == (30, 0.5, 1e-2)
    assert retrack["betas"] == [0.9, 0.999] and retrack["weight_decay"] == 1e-2
    assert resolve({"data": {"inject": [{"image": "tshirt", "copies": 2}]}})["methods"]["siss"]["lr"] == 1e-4
    names = [r.name for r in prompt_runs(params, 2)]
    assert names[:2] == ["naive-s0-i0", "naive-s0-i1"] and len(names) == 12
    assert all(Run.parse(n).name == n for n in names)


@pytest.mark.parametrize("changes, expected", [
    ({"lora": {"rank": 4, "alpha": 4}}, "text_to_image.lora: LoRA settings given, but text_to_image.train is 'full'"),
    ({"train": "lora"}, "text_to_image.lora: required"),
    ({"prompts": None}, "text_to_image.prompts: required"),
    ({"split": {"space": "sscd"}}, "text_to_image.split.sscd: required"),
    ({"captions": {"injected": [7]}}, "text_to_image.captions.injected: needs one label per data.inject entry (0)"),
    ({"generation": {"n": 8}}, "knn.k: 10 nearest retain latents asked for"),
    ({"generation": {"scheduler": "euler"}},
     "text_to_image.generation.scheduler: got 'euler', expected one of ['ddim', 'ddpm']"),
    ({"experiment": {"per_image": True}}, "experiment.per_image: not supported with model.kind 'text_to_image'"),
])
def test_text_to_image_params_are_checked_before_any_compute(changes, expected):
    experiment = changes.pop("experiment", {})
    with pytest.raises(UserError, match=re.escape(expected)):
        resolve({"model": {"kind": "text_to_image"}, "experiment": experiment,
                 "text_to_image": {"prompts": "p.jsonl", **changes}})
