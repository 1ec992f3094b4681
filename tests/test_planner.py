"""The one request planner: the profile's limits in the request class, one sampling resolution for every way in."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest
from pydantic import ValidationError

from serving.champion import LoadedModel, Provenance
from serving.config import Defaults, Limits, ServingConfig
from serving.planner import BatchGeneration, Chat, RequestError, RequestPlanner
from serving.schemas import GenerateRequest, RequestBase, request_model
from tests.conftest import PROJECT_ROOT, names

PROV = Provenance(family="seq2seq", registered_name="cw", version="3", alias="champion", mlflow_run_id="r",
                  training_run_id="abcdef0123", source="models:/cw/3", metrics={})
TIGHT = Limits(max_prompt_chars=50, max_new_tokens=64, max_drafts=2, reject_emoji=False)
WARM = Defaults(max_new_tokens=32, temperature=0.6, top_k=20, top_p=0.9, repetition_penalty=1.2, min_p=0.02)


@pytest.fixture(scope="module")
def writer(tiny_tokenizer):
    from tests.conftest import tiny_writer

    return tiny_writer(tiny_tokenizer)


def engine_for(writer, config: ServingConfig):
    from serving.engine import Engine

    engine = Engine(config, loader=lambda source: LoadedModel(writer, PROV, 0.1))
    assert engine.load()
    return engine


def test_only_the_service_reads_the_serving_profile_and_it_does_so_as_it_starts(tmp_path):
    """The modules that check, plan and write requests import without a profile; the service reads it."""
    env = {**os.environ, "CW_SERVING_CONFIG": str(tmp_path / "missing.yaml"), "PYTHONPATH": str(PROJECT_ROOT)}
    modules = ["serving.schemas", "serving.planner", "serving.engine", "serving.ui_helpers", "serving.openai_compat",
               "serving.openapi", "serving.batch_inference", "serving.ui", "steps", "pipelines"]
    done = subprocess.run([sys.executable, "-c", f"import {', '.join(modules)}; print('ok')"], env=env,
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-c", "import serving.service"], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "missing.yaml" in done.stderr and "not found" in done.stderr


def test_a_profile_s_limits_and_defaults_make_its_request_class():
    planner = RequestPlanner(TIGHT, WARM)
    model = planner.request_model
    assert issubclass(model, RequestBase) and model.__name__ == "GenerateRequest"
    assert request_model(TIGHT, WARM) is model  # one class per profile: the service, its engine and UI share it
    request = planner.request(prompt="A fox with a lantern 🏮.")  # this profile allows emoji
    assert request.max_new_tokens == 32 and request.num_drafts == 1
    for fields, name in [({"num_drafts": 3}, "num_drafts"), ({"max_new_tokens": 65}, "max_new_tokens"),
                         ({"prompt": "x" * 51}, "prompt")]:
        with pytest.raises(ValidationError) as err:
            planner.request(**{"prompt": "A fox.", **fields})
        assert err.value.errors()[0]["loc"][0] == name
    props = model.model_json_schema()["properties"]
    assert (props["num_drafts"]["maximum"], props["max_new_tokens"]["maximum"], props["prompt"]["maxLength"]) == \
        (2, 64, 50)
    assert "else 0.6" in props["temperature"]["description"]  # the docs name the profile's default
    # the code's class keeps the code's limits, and refuses emoji
    assert GenerateRequest.model_json_schema()["properties"]["num_drafts"]["maximum"] == Limits().max_drafts
    with pytest.raises(ValidationError, match="emoji"):
        RequestPlanner().request(prompt="A fox with a lantern 🏮.")


def test_the_v1_layer_is_held_to_the_profile_s_limits_and_documents_them():
    from serving.openai_compat import CompletionRequest, OpenAIError, generate_request, openapi_parts

    planner = RequestPlanner(TIGHT, WARM)
    assert generate_request(planner, CompletionRequest(model="m", prompt="x"), "x").max_new_tokens == 32
    for extra, param in [({"max_tokens": 65}, "max_tokens"), ({"n": 3}, "n")]:
        with pytest.raises(OpenAIError) as err:
            generate_request(planner, CompletionRequest(model="m", prompt="x", **extra), "x")
        assert err.value.param == param and err.value.status == 400
    _, schemas = openapi_parts("m", TIGHT)
    completion, chat = schemas["CompletionRequest"]["properties"], schemas["ChatRequest"]["properties"]
    assert [b["maximum"] for b in completion["max_tokens"]["anyOf"] if "maximum" in b] == [64]
    assert [b["maximum"] for b in chat["max_completion_tokens"]["anyOf"] if "maximum" in b] == [64]
    assert completion["n"]["maximum"] == 2


def test_every_way_in_resolves_sampling_the_same_way(writer):
    """API, UI, OpenAI layer and batch: the profile's defaults, then the preset, then what was set."""
    from serving.openai_compat import CompletionRequest, generate_request
    from serving.ui_helpers import request_for

    config = replace(ServingConfig(), limits=TIGHT, defaults=WARM)
    engine = engine_for(writer, config)
    planner = engine.planner
    api = engine.plan(planner.request(prompt="A fox.", preset="steady", top_k=7, seed=3, max_new_tokens=10)).settings
    v1 = CompletionRequest(model="m", prompt="A fox.", preset="steady", top_k=7, seed=3, max_tokens=10)
    openai = engine.plan(generate_request(planner, v1, "A fox.")).settings
    batch = planner.settings(BatchGeneration(preset="steady", top_k=7, max_new_tokens=10, trim_to_sentence=False),
                             3, writer.controls(), form="story", genre="")
    assert api == openai == batch
    assert (api.temperature, api.top_k, api.top_p, api.min_p, api.repetition_penalty) == (0.7, 7, 0.9, 0.05, 1.15)
    plain = engine.plan(planner.request(prompt="A fox.", seed=3)).settings  # the profile's defaults
    assert (plain.max_new_tokens, plain.temperature, plain.top_k, plain.min_p) == (32, 0.6, 20, 0.02)
    # the UI sends every control's value: they are what was set
    values = {"prompt": "A fox.", "form": "story", "genre": "", "max_new_tokens": 10.0, "preset": "steady",
              "temperature": 0.7, "top_k": 7.0, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.15, "stop": "",
              "num_drafts": 1.0, "dry_multiplier": 0.0, "dry_base": 1.75, "dry_allowed_length": 2.0,
              "xtc_threshold": 0.1, "xtc_probability": 0.0, "wind_down": 0.0, "target_words": 0.0}  # floats (sliders)
    ui = engine.plan(request_for(planner, values, 3))
    assert ui.settings == api and ui.seeds == [3]
    with pytest.raises(ValidationError):  # the UI's values are held to the profile's limits too
        request_for(planner, {**values, "preset": "", "num_drafts": 3}, 3)
    seeds = engine.plan(planner.request(prompt="A fox.", seed=2**63 - 2, num_drafts=2)).seeds
    assert seeds == [2**63 - 2, 2**63 - 1]
    with pytest.raises(RequestError, match="unknown genre 'romance'") as err:
        engine.plan(planner.request(prompt="A fox.", genre="romance"))
    assert err.value.field == "genre"
    chat = engine.plan(planner.request(prompt="A fox.", seed=1), Chat(system="Be brief.", lead="Once")).settings
    assert (chat.system, chat.lead) == ("Be brief.", "Once")


def test_batch_inference_writes_what_the_api_writes_for_the_same_seed(writer):
    from serving.batch_inference import generate_for_prompts

    prompts = pd.DataFrame([{"id": "a", "prompt": "A fox finds a key.", "form": "story", "genre": "", "seed": 9},
                            {"id": "b", "prompt": "A crow and a jug.", "form": "fable", "genre": "", "seed": -1}])
    generation = BatchGeneration(max_new_tokens=10, seed=4, trim_to_sentence=False)
    done: list[tuple[int, int]] = []
    out = generate_for_prompts(writer, prompts, generation, PROV.as_dict(), batch_size=1,
                               progress=lambda d, t: done.append((d, t)))
    assert list(out["seed"]) == [9, 4] and done == [(1, 2), (2, 2)]  # a row's seed wins, else the run's
    engine = engine_for(writer, ServingConfig())  # the code's serving defaults, as batch inference plans with
    for row in out.itertuples():
        request = GenerateRequest(prompt=row.prompt, form=row.form, max_new_tokens=10, seed=int(row.seed))
        assert asyncio.run(engine.generate_async(request)).drafts[0].text == row.text
    settings = json.loads(out["settings"].iloc[0])
    assert settings["temperature"] == Defaults().temperature and settings["trim_to_sentence"] is False
    assert out["version"].iloc[0] == "3"
    bad = pd.concat([prompts, pd.DataFrame([{"id": "c", "prompt": "x", "form": "limerick", "genre": "", "seed": 1}])])
    with pytest.raises(ValueError, match=names("prompt c", "form", "'limerick'")):
        generate_for_prompts(writer, bad, generation, PROV.as_dict())
    sonnet = pd.DataFrame([{"id": "z", "prompt": "y", "form": "sonnet", "genre": "", "seed": 1}])
    with pytest.raises(ValueError, match=names("prompt z", "'sonnet'")):  # the first bad row is named
        generate_for_prompts(writer, pd.concat([prompts.iloc[:1], sonnet, prompts.iloc[1:], bad.iloc[2:]]),
                             generation, PROV.as_dict())


def test_batch_generation_settings_refuse_what_a_request_would():
    for fields, name in [({"temperature": 0}, "temperature"), ({"preset": "calm"}, "preset"),
                         ({"stop": ("",)}, "stop"), ({"max_new_tokens": 0}, "max_new_tokens"),
                         ({"temprature": 0.5}, "temprature")]:
        with pytest.raises(ValidationError, match=name):
            BatchGeneration(**fields)
    assert BatchGeneration().fixed() == {"trim_to_sentence": True, "target_words": 0, "num_beams": 1}


def test_the_ui_sliders_offer_exactly_the_api_bounds():
    """The sampling sliders are ranged by SamplingParams' bounds: what the UI offers, the API accepts (and no more)."""
    from models.params import SAMPLING_FIELDS, SamplingParams
    from serving.config import Defaults
    from serving.ui import sampling_sliders

    props = GenerateRequest.model_json_schema()["properties"]
    for name, slider in zip(SAMPLING_FIELDS, sampling_sliders(Defaults()), strict=True):
        rule = next(option for option in props[name]["anyOf"] if option.get("type") != "null")
        low = rule.get("minimum", rule.get("exclusiveMinimum"))
        high = rule.get("maximum", rule.get("exclusiveMaximum"))
        assert (slider.minimum == low) == ("minimum" in rule), name  # an open end moves in by one step
        assert (slider.maximum == high) == ("maximum" in rule), name
        assert low <= slider.minimum < slider.maximum <= high, name
        for value in (slider.minimum, slider.maximum):  # both ends are requests the API accepts
            kind = SamplingParams.model_fields[name].annotation  # the UI casts as request_for does
            GenerateRequest(prompt="A fox.", **{name: int(value) if kind is int else float(value)})
        assert slider.value == getattr(Defaults(), name)
    assert SamplingParams.model_fields["temperature"].metadata  # the bounds live on the one class


def test_the_uis_banned_phrases_and_word_bias_boxes_become_request_fields():
    from models.params import SAMPLING_FIELDS, default
    from serving.ui_helpers import phrase_lines, request_for, word_bias_lines

    assert phrase_lines("  shivers down her spine \n\n a tapestry of\n") == ["shivers down her spine", "a tapestry of"]
    assert word_bias_lines("suddenly -100\ndragon: 3\n\nmoon=2.5") == {"suddenly": -100.0, "dragon": 3.0, "moon": 2.5}
    for bad, line in (("suddenly", 1), ("ok 1\nmuch too many 4", 2), ("dragon: lots", 1)):
        with pytest.raises(ValueError, match=f"line {line}"):
            word_bias_lines(bad)
    values = {"prompt": "A fox.", "form": "story", "genre": "", "max_new_tokens": 10.0, "preset": "", "stop": "",
              "banned_phrases": "once upon a time", "word_bias": "fox -100", "num_drafts": 1.0, "target_words": 0,
              **{name: float(default(name)) for name in SAMPLING_FIELDS}}
    request = request_for(RequestPlanner(), values, 3)
    assert request.banned_phrases == ("once upon a time",) and request.word_bias == {"fox": -100.0}


def test_a_request_asks_a_length_and_the_serving_profile_winds_down_near_it():
    from serving.config import load_serving_config

    planner = RequestPlanner.for_config(load_serving_config(env={}))
    controls = {"form": ["story"], "genre": [""]}
    asked = planner.settings(planner.request(prompt="A fox.", target_words=150), 1, controls)
    assert (asked.target_words, asked.wind_down) == (150, 0.3)  # configs/serving.yaml's wind-down
    assert planner.settings(planner.request(prompt="A fox."), 1, controls).target_words == 0  # nothing asked
    batch = planner.settings(BatchGeneration(target_words=60), 1, controls, **BatchGeneration(target_words=60).fixed())
    assert batch.target_words == 60
    with pytest.raises(ValidationError):
        planner.request(prompt="A fox.", target_words=-1)
