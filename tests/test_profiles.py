"""Every run profile's step settings build the configs they are meant for (typos fail here, not mid-run)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from infra.profiles import load_profile
from pipelines.settings import NONE_KEPT, SettingsError, resolve_settings, typed_sections, typed_settings
from tests.conftest import PROJECT_ROOT, names
from training.config import TransformerTrainConfig


def sections(step: str) -> dict[str, type]:
    import steps

    return typed_sections(getattr(steps, step))


SERVING_PROFILES = ("deployment.yaml", "inference.yaml", "serving.yaml", "monitoring.yaml")  # not training
PROFILES = sorted(p for p in (PROJECT_ROOT / "configs").glob("*.yaml") if p.name not in SERVING_PROFILES)


@pytest.mark.parametrize("path", PROFILES, ids=[p.name for p in PROFILES])
def test_profile_settings_build_their_configs(path):
    """Every typed section of every training profile builds its config (resolve_settings builds each one)."""
    import pipelines

    profile = load_profile(path)
    full = resolve_settings(profile, pipelines.training_pipeline, path.name)
    steps = full["steps"]
    checked = 0
    for step in steps:
        for parameter in sections(step):
            if (step, parameter) not in NONE_KEPT:
                assert isinstance(steps[step]["parameters"][parameter], dict), (step, parameter)
                checked += 1
    assert checked == 13  # clean_data 1, train_seq2seq 2, train_transformer 4, train_gan 4, evaluate 2
    assert profile["model"]["name"] == "creative-writer"


@pytest.mark.parametrize("path", PROFILES, ids=[p.name for p in PROFILES])
def test_profiles_restate_no_default_the_code_holds(path):
    """Defaults live in the typed configs only: a profile's typed sections hold what differs from them."""
    steps = load_profile(path)["steps"]
    restated = []
    for step in steps:
        for parameter, cls in sections(step).items():
            given = ((steps.get(step) or {}).get("parameters") or {}).get(parameter) or {}
            defaults = typed_settings(cls, {})
            restated += [f"{step}.{parameter}.{key}" for key, value in given.items()
                         if defaults.get(key) == value or (isinstance(defaults.get(key), tuple)
                                                           and list(defaults[key]) == value)]
    assert not restated, f"{path.name} restates defaults: {restated}"


def test_resolved_settings_put_the_profile_over_every_default_the_code_holds():
    import pipelines

    path = PROJECT_ROOT / "configs" / "smoke.yaml"
    full = resolve_settings(load_profile(path), pipelines.training_pipeline, "smoke.yaml")
    train = full["steps"]["train_transformer"]["parameters"]["train_config"]
    assert set(train) == {f.name for f in dataclasses.fields(TransformerTrainConfig)}
    assert train["batch_size"] == 8 and train["processes"] == 1  # the profile's value; the code's default
    s2s = full["steps"]["train_seq2seq"]["parameters"]["model"]
    assert "vocab_size" not in s2s and s2s["attention"] in ("bahdanau", "luong", "none")  # the tokenizer's
    import inspect

    import steps

    given = load_profile(path)["steps"]
    filled = 0
    for name, step in full["steps"].items():  # a plain parameter the profile leaves out has its step's default
        profile_params = (given.get(name) or {}).get("parameters") or {}
        for parameter, p in inspect.signature(getattr(steps, name).entrypoint).parameters.items():
            plain = parameter not in sections(name) and parameter not in profile_params
            if plain and parameter in step["parameters"]:
                assert step["parameters"][parameter] == p.default, (name, parameter)
                filled += 1
    assert filled >= 1
    assert "source_fingerprint" not in full["steps"]["ingest_data"]["parameters"]  # the pipeline passes it


@pytest.mark.parametrize(("section", "value", "said"), [
    ("train_config", {"batch_size": 0}, r"steps\.train_transformer\.parameters\.train_config: .*batch_size"),
    ("train_config", {"batchsize": 4}, names("train_config", "'batchsize'", "TransformerTrainConfig", "epochs")),
    ("model", {"context": 16}, r"steps\.train_transformer\.parameters\.model: .*context"),
])
def test_a_bad_setting_is_named_by_its_profile_key(section, value, said):
    import pipelines

    profile = {"steps": {"train_transformer": {"parameters": {section: value}}}}
    with pytest.raises(SettingsError, match=said):
        resolve_settings(profile, pipelines.training_pipeline, "mine.yaml")


def test_an_empty_step_entry_is_named(tmp_path):
    from infra.profiles import ProfileError

    path = tmp_path / "mine.yaml"
    path.write_text("parameters: {dataset: [builtin]}\nsteps:\n  evaluation_report:\n")
    with pytest.raises(ProfileError, match=names("mine.yaml", "steps.evaluation_report")):
        load_profile(path)


def test_show_config_prints_the_resolved_settings_without_running(capsys):
    import run

    assert run.main(["--show-config", "--config", str(PROJECT_ROOT / "configs" / "smoke.yaml")]) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out)
    assert shown["steps"]["train_transformer"]["parameters"]["train_config"]["processes"] == 1
    assert shown["parameters"]["dataset"] == ["builtin?n=300&seed=13"]


@pytest.mark.parametrize("name", ["deployment", "inference"])
def test_deployment_and_inference_profiles_fit_their_pipelines(name):
    from run import pipeline_parameters

    profile = load_profile(PROJECT_ROOT / "configs" / f"{name}.yaml")
    params = profile["parameters"]
    assert set(params) <= set(pipeline_parameters(name))  # read from the pipeline's own signature
    if name == "deployment":
        assert params["host"] == "127.0.0.1"  # loopback unless someone means to expose it


def test_the_inference_generation_settings_are_typed_and_checked_before_the_run():
    """The pipeline's ``generation`` is a BatchGeneration: resolved whole, bad values named by their key."""
    import pipelines
    from serving.planner import BatchGeneration

    assert typed_sections(pipelines.inference_pipeline) == {"generation": BatchGeneration}
    profile = {"parameters": {"generation": {"preset": "steady", "max_new_tokens": 40}}}
    full = resolve_settings(profile, pipelines.inference_pipeline, "inference.yaml")
    generation = full["parameters"]["generation"]
    assert generation["preset"] == "steady" and generation["max_new_tokens"] == 40
    assert generation["trim_to_sentence"] is True and generation["seed"] == 0  # the class's defaults filled in
    assert "generation" not in full["steps"]["batch_generate"]["parameters"]  # the pipeline passes it on
    for bad, said in [({"temprature": 0.7}, names("'temprature'")),
                      ({"preset": "calm"}, "parameters.generation: preset"),
                      ({"top_p": 0}, "parameters.generation: top_p"),
                      ({"max_new_tokens": 5000}, names("max_new_tokens", "4096")),
                      ({"stop": ["a"] * 5}, "stop")]:
        with pytest.raises(SettingsError, match=said):
            resolve_settings({"parameters": {"generation": bad}}, pipelines.inference_pipeline, "inference.yaml")
    given = (load_profile(PROJECT_ROOT / "configs" / "inference.yaml")["parameters"].get("generation") or {})
    defaults = typed_settings(BatchGeneration, {})
    assert not [key for key, value in given.items() if defaults.get(key) == value], "restates defaults"


def test_serving_profile_loads():
    from serving.config import load_serving_config

    config = load_serving_config(PROJECT_ROOT / "configs" / "serving.yaml", env={})
    assert config.server.host == "127.0.0.1" and config.limits.max_drafts >= 1 and config.ui.examples


def test_a_profile_extends_another_mapping_by_mapping(tmp_path):
    from infra.profiles import ProfileError, load_profile

    (tmp_path / "base.yaml").write_text("parameters: {dataset: [builtin]}\nsteps:\n  evaluate:\n    parameters:\n"
                                        "      suite: {ppl_pieces: 32, check_pairs: 6}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nsteps:\n  evaluate:\n    parameters:\n"
                                         "      suite: {check_pairs: 2}\n")
    child = load_profile(tmp_path / "child.yaml")
    assert child["steps"]["evaluate"]["parameters"]["suite"] == {"ppl_pieces": 32, "check_pairs": 2}
    assert child["parameters"]["dataset"] == ["builtin"]
    for bad, said in [("extends: nowhere.yaml\n", names("nowhere.yaml")), ("extends: 3\n", names("extends")),
                      ("extends: self.yaml\n", names("self.yaml"))]:
        (tmp_path / "self.yaml").write_text(bad)
        with pytest.raises(ProfileError, match=said):
            load_profile(tmp_path / "self.yaml")
