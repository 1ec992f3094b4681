"""The serving logic without a server: config, request checks, engine, batching, guard middleware, UI helpers."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.batching import Batcher
from serving.champion import LoadedModel, NoModelError, Provenance
from serving.config import ServingConfigError, load_serving_config
from serving.engine import Engine, NotReadyError
from serving.planner import RequestError, RequestPlanner
from serving.schemas import GenerateRequest, check_prompt
from tests.conftest import names

PROV = Provenance(family="seq2seq", registered_name="cw", version="3", alias="champion", mlflow_run_id="r",
                  training_run_id="abcdef0123", source="models:/cw/3", metrics={"ppl_word": 2.5})


def write_yaml(tmp_path, text: str):
    path = tmp_path / "serving.yaml"
    path.write_text(text)
    return path


# --- config ---------------------------------------------------------------------------------------------
def test_default_profile_loads_and_env_overrides(tmp_path, monkeypatch):
    config = load_serving_config(env={})
    assert config.model.alias == "champion" and config.server.host == "127.0.0.1" and config.batching.enabled
    assert config.model.describe() == "models:/creative-writer@champion"
    env = {"CW_MODEL_VERSION": "7", "CW_BATCHING": "off", "CW_PORT": "4000"}
    config = load_serving_config(env=env)
    assert config.model.version == "7" and not config.batching.enabled and config.server.port == 4000
    assert config.model.describe() == "models:/creative-writer/7"
    monkeypatch.setenv("CW_API_TOKEN", " tok-9f3 ")
    assert config.token == "tok-9f3" and "tok-9f3" not in json.dumps(config.as_dict())


@pytest.mark.parametrize(("text", "message"), [
    ("limits: {max_drafts: many}", "limits.max_drafts"),
    ("limits: {max_draft: 3}", "unknown key 'limits.max_draft'"),
    ("servers: {}", "unknown key 'servers'"),
    ("limits: {max_drafts: -1}", "limits.max_drafts"),
    ("ui: {examples: [[a prompt, story]]}", "ui.examples.0.2"),
    ("defaults: {max_new_tokens: 900}", "limits.max_new_tokens"),
    ("batching: {enabled: 3}", "batching.enabled"),
    ("[1, 2", "YAML"),
])
def test_bad_profiles_are_named(tmp_path, text, message):
    with pytest.raises(ServingConfigError, match=names(message)):
        load_serving_config(write_yaml(tmp_path, text), env={})


def test_bad_environment_values_are_named():
    with pytest.raises(ServingConfigError, match="CW_BATCHING"):
        load_serving_config(env={"CW_BATCHING": "sometimes"})
    with pytest.raises(ServingConfigError, match="CW_PORT"):
        load_serving_config(env={"CW_PORT": "eighty"})
    with pytest.raises(ServingConfigError, match=names("CW_PORT", "65535")):
        load_serving_config(env={"CW_PORT": "70000"})
    assert load_serving_config(env={"CW_PORT": "", "CW_MODEL_ALIAS": ""}).server.port == 3000  # empty: unset
    with pytest.raises(ServingConfigError, match="not found"):
        load_serving_config(env={"CW_SERVING_CONFIG": "/nonexistent.yaml"})


# --- request checks -------------------------------------------------------------------------------------
def test_prompt_checks():
    assert check_prompt("  A fox.\nA key.\t ") == "A fox.\nA key."
    assert check_prompt("Ünïcödé — “quotes” …") == "Ünïcödé — “quotes” …"
    for bad, what in [("", "empty"), (" \n", "empty"), ("a\x07b", "U+0007"), ("a\u202eb", "U+202E"),
                      ("fire 🔥", "emoji"), ("flag 🇫🇷", "emoji")]:
        if what == "U+202E":  # bidi override is a format character, allowed (like other Cf marks)
            check_prompt(bad)
            continue
        with pytest.raises(ValueError, match=re.escape(what)):
            check_prompt(bad)
    assert check_prompt("fire 🔥", reject_emoji=False) == "fire 🔥"


def test_request_model_limits_and_unknown_fields():
    assert GenerateRequest(prompt="A fox", form=" Fable ").form == "fable"
    for body, field in [({"prompt": "A fox", "top_k": -1}, "top_k"), ({"prompt": "A fox", "extra": 1}, "extra"),
                        ({"prompt": "A fox", "form": "<eos>"}, "form"), ({"prompt": "x" * 5000}, "prompt"),
                        ({"prompt": "A fox", "repetition_penalty": 0.5}, "repetition_penalty")]:
        with pytest.raises(ValidationError) as err:
            GenerateRequest(**body)
        assert err.value.errors()[0]["loc"][0] == field


# --- engine ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def writer(tiny_tokenizer):
    from tests.conftest import tiny_writer

    return tiny_writer(tiny_tokenizer)


def engine_for(writer, batching: bool = True, **kwargs) -> Engine:
    from dataclasses import replace

    config = load_serving_config(env={})
    config = replace(config, batching=replace(config.batching, enabled=batching, **kwargs))
    engine = Engine(config, loader=lambda source: LoadedModel(writer, PROV, 0.1))
    assert engine.load()
    return engine


def generate(engine: Engine, request: GenerateRequest):
    """The engine's drafts for one request (as the service asks for them)."""
    return asyncio.run(engine.generate_async(request))


def test_engine_drafts_use_consecutive_seeds_and_match_the_model(writer):
    from models.contract import GenerationSettings

    engine = engine_for(writer, batching=False)
    response = generate(engine, GenerateRequest(prompt="A fox finds a key.", max_new_tokens=12, seed=10, num_drafts=3))
    assert [d.seed for d in response.drafts] == [10, 11, 12]
    settings = GenerationSettings(max_new_tokens=12, seed=11, temperature=0.8, top_k=50, top_p=0.95,
                                  repetition_penalty=1.1)
    assert response.drafts[1].text == writer.generate(["A fox finds a key."], settings)[0]
    assert response.provenance["version"] == "3" and response.settings["num_drafts"] == 3
    assert all(d.tokens == writer.count_tokens(d.text) for d in response.drafts)


def test_engine_checks_form_and_genre_against_the_model(writer):
    engine = engine_for(writer)
    with pytest.raises(RequestError, match=names("'limerick'", "fable", "poem", "story")) as err:
        generate(engine, GenerateRequest(prompt="A fox", form="limerick"))
    assert err.value.field == "form"
    with pytest.raises(RequestError, match="unknown genre 'romance'") as err:
        generate(engine, GenerateRequest(prompt="A fox", genre="romance"))
    assert err.value.field == "genre" and "none" not in str(err.value).split("knows:")[1].split("(")[0]


def test_batched_and_unbatched_engines_write_the_same_and_batch_under_load(writer):
    plain, batched = engine_for(writer, batching=False), engine_for(writer, batching=True, max_latency_ms=50)
    requests = [GenerateRequest(prompt=f"A {animal} finds a key.", max_new_tokens=16, seed=i, num_drafts=1 + i % 2)
                for i, animal in enumerate(["fox", "cat", "owl", "bear", "wolf", "hare"])]

    async def together():
        return await asyncio.gather(*(batched.generate_async(r) for r in requests))

    results = asyncio.run(together())
    expected = [generate(plain, r) for r in requests]
    assert [[d.text for d in r.drafts] for r in results] == [[d.text for d in r.drafts] for r in expected]
    assert max(batched.batch_sizes) > 2  # requests that arrived together ran as one batch


def test_a_stream_driven_off_the_event_loop_joins_to_the_draft(writer):
    from serving.engine import iterate_in_thread

    engine = engine_for(writer)
    request = GenerateRequest(prompt="An owl and a lantern.", max_new_tokens=20, seed=4)

    async def collect():
        settings, pieces = engine.stream(request)
        return settings, [piece async for piece in iterate_in_thread(pieces)]

    settings, pieces = asyncio.run(collect())
    assert settings.seed == 4 and len(pieces) > 1
    assert "".join(pieces) == generate(engine, request).drafts[0].text


def test_requests_beyond_the_in_flight_limit_are_refused_at_once_with_a_retry_time(writer):
    from dataclasses import replace

    from serving.engine import OverloadedError

    config = load_serving_config(env={})
    engine = Engine(replace(config, limits=replace(config.limits, max_in_flight=1)),
                    loader=lambda source: LoadedModel(writer, PROV, 0.1))
    assert engine.load()
    request = GenerateRequest(prompt="An owl and a lantern.", max_new_tokens=12, seed=4)
    _, first = engine.stream(request)
    next(first)  # the first writer holds the only place while it streams
    with pytest.raises(OverloadedError) as busy:
        engine.stream(request)
    with pytest.raises(OverloadedError):
        generate(engine, request)
    assert busy.value.retry_after >= 1 and engine.describe()["load"] == {"in_flight": 1, "refused": 2}
    first.close()  # a client that goes away gives its place back
    assert engine.admission.in_flight == 0
    assert generate(engine, request).drafts[0].text


def test_a_client_that_goes_away_mid_stream_frees_its_place(writer):
    import time

    from serving.engine import iterate_in_thread

    engine = engine_for(writer)
    request = GenerateRequest(prompt="An owl and a lantern.", max_new_tokens=200, seed=4)

    async def first_piece_only():
        _, pieces = engine.stream(request)
        stream = iterate_in_thread(pieces)
        piece = await stream.__anext__()
        await stream.aclose()  # the client disconnects
        return piece

    assert asyncio.run(first_piece_only())
    deadline = time.monotonic() + 10
    while engine.admission.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.admission.in_flight == 0


def test_not_ready_reason_and_retry(writer):
    from dataclasses import replace

    calls = []

    def loader(source):
        calls.append(source)
        if len(calls) == 1:
            raise NoModelError("no registered model 'cw'; train one")
        return LoadedModel(writer, PROV, 0.1)

    config = load_serving_config(env={})
    engine = Engine(replace(config, model=replace(config.model, retry_s=0.01)), loader=loader)
    assert not engine.load()
    ready, reason = engine.check_ready()
    assert not ready and "no registered model 'cw'" in reason
    with pytest.raises(NotReadyError, match="no registered model"):
        generate(engine, GenerateRequest(prompt="A fox"))
    assert engine.describe()["ready"] is False
    import time

    deadline = time.monotonic() + 10
    while not engine.check_ready()[0] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.check_ready() == (True, "serving seq2seq · cw v3 @champion · run abcdef01 · torch")
    info = engine.describe()
    assert info["metrics"] == {"ppl_word": 2.5} and info["attention_map"] and "story" in info["controls"]["form"]


def test_load_failure_other_than_no_model_is_reported():
    def broken(source):
        raise OSError("disk on fire")

    engine = Engine(load_serving_config(env={}), loader=broken)
    assert not engine.load()
    said = engine.check_ready()[1]
    assert "models:/creative-writer@champion" in said and "OSError: disk on fire" in said


# --- batcher --------------------------------------------------------------------------------------------
def test_batcher_groups_by_key_caps_size_and_passes_errors():
    calls = []

    def run(key, rows):
        calls.append((key, len(rows)))
        if key == "boom":
            raise RuntimeError("model failed")
        return [f"{key}:{p}:{s}" for p, s in rows]

    async def scenario():
        batcher = Batcher(run, max_batch_size=4, max_latency_ms=30)
        jobs = [batcher.submit("a", [("p", i)]) for i in range(6)] + [batcher.submit("b", [("q", 9), ("q", 10)])]
        results = await asyncio.gather(*jobs)
        with pytest.raises(RuntimeError, match="model failed"):
            await batcher.submit("boom", [("x", 1)])
        assert (await batcher.submit("a", [])).texts == []
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert [r.texts for r in results[:2]] == [["a:p:0"], ["a:p:1"]] and results[6].texts == ["b:q:9", "b:q:10"]
    assert all(size <= 4 for key, size in calls) and ("b", 2) in calls and calls[0] == ("a", 4)
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(run, max_batch_size=0)


# --- middleware -----------------------------------------------------------------------------------------
@pytest.fixture
def guarded():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from serving.middleware import GuardMiddleware

    async def echo(request):
        return PlainTextResponse(f"got {len(await request.body())}")

    app = Starlette(routes=[Route("/generate", echo, methods=["POST"]), Route("/readyz", echo),
                            Route("/ui/", echo)])
    return TestClient(GuardMiddleware(app, token="tok", max_body_bytes=100), follow_redirects=False)


def test_guard_token_cookie_and_body_cap(guarded):
    assert guarded.get("/readyz").status_code == 200  # probes stay open
    assert guarded.post("/generate", content=b"x").status_code == 401
    assert guarded.post("/generate", content=b"x", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = guarded.post("/generate", content=b"x" * 100, headers={"Authorization": "Bearer tok"})
    assert ok.status_code == 200 and ok.text == "got 100"
    big = guarded.post("/generate", content=b"x" * 101, headers={"Authorization": "Bearer tok"})
    assert big.status_code == 413 and "100 bytes" in big.json()["error"]
    chunked = guarded.post("/generate", content=iter([b"x" * 60, b"x" * 60]), headers={"Authorization": "Bearer tok"})
    assert chunked.status_code == 413
    small = guarded.post("/generate", content=iter([b"x" * 30, b"x" * 30]), headers={"Authorization": "Bearer tok"})
    assert small.text == "got 60"
    login = guarded.get("/ui/?token=tok&lang=en")
    assert login.status_code == 303 and login.headers["location"] == "/ui/?lang=en"
    guarded.cookies.clear()
    assert guarded.get("/ui/?token=bad").status_code == 401
    assert guarded.get("/ui/", cookies={"cw_token": "tok"}).status_code == 200


def test_a_writer_signs_in_to_the_ui_with_their_own_token_and_a_browser_gets_a_sign_in_form():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from serving.middleware import GuardMiddleware

    async def who(request):
        return PlainTextResponse(request.cookies.get("cw_token", ""))

    app = Starlette(routes=[Route("/ui/", who), Route("/generate", who, methods=["POST"])])
    client = TestClient(GuardMiddleware(app, token="tok", writer_token=lambda t: t == "ada-token"),
                        follow_redirects=False)
    login = client.get("/ui/?token=ada-token")
    assert login.status_code == 303 and "cw_token=ada-token" in login.headers["set-cookie"]
    assert "HttpOnly" in login.headers["set-cookie"] and login.headers["location"] == "/ui/"
    assert client.get("/ui/").text == "ada-token"  # the cookie carries the writer's token: the UI knows who
    client.cookies.clear()
    page = client.get("/ui/", headers={"accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert '<form method="get" action="/ui/">' in page.text and 'name="token"' in page.text
    assert 'id="wrong-token"' not in page.text
    wrong = client.get("/ui/?token=nope", headers={"accept": "text/html"})
    assert wrong.status_code == 401 and 'id="wrong-token"' in wrong.text
    assert client.get("/ui/?token=nope").json()["error"].startswith("missing or wrong bearer token")  # scripts: JSON
    assert client.get("/ui/", cookies={"cw_token": "forged"}).status_code == 401


# --- UI helpers -----------------------------------------------------------------------------------------
def test_ui_export_formats_and_readable_errors(tmp_path):
    from serving.ui import continuation_prompt, export
    from serving.ui_helpers import provenance_line, readable

    state = {"prompt": "A fox", "texts": ["One.", "Two."], "seeds": [1, 2], "settings": {"seed": 1},
             "provenance": PROV.as_dict()}
    for fmt in ("txt", "md", "json"):
        folder = tmp_path / fmt
        folder.mkdir()
        text = Path(export(state, fmt, folder)).read_text()
        assert "One." in text and "Two." in text
    assert json.loads(Path(export(state, "json", tmp_path)).read_text())["provenance"]["version"] == "3"
    assert "creative" not in Path(export(state, "txt", tmp_path)).read_text()
    assert export({}, "txt") is None
    with pytest.raises(ValueError, match="download format"):
        export(state, "pdf", tmp_path)
    line = provenance_line(PROV.as_dict(), {"seed": 7, "temperature": 0.8})
    assert line == ("Written by seq2seq · cw v3 @champion · training run abcdef01 · test perplexity/word 2.50 · "
                    "on torch · seed 7 · temperature 0.8")
    try:
        GenerateRequest(prompt=" ")
    except ValidationError as exc:
        assert readable(exc).startswith("prompt: the prompt is empty")
    assert "Traceback" not in readable(KeyError("x")) and "KeyError" in readable(KeyError("x"))
    long = "First sentence here. " * 40 + "The end is near."
    assert continuation_prompt(long).endswith("The end is near.") and len(continuation_prompt(long)) <= 400
    assert continuation_prompt("Short text.") == "Short text."


# --- a champion built on a pretrained base (LoRA adapter on a tiny chat Llama) ---------------------------
@pytest.fixture(scope="module")
def lora_champion(tmp_path_factory, tiny_corpus):
    """A tiny chat-base Transformer with an adapter, saved and loaded back as the server would."""
    import torch

    from models.families import load_model
    from models.transformer import TransformerConfig, build_transformer
    from weights.tiny import write_tiny_llama

    folder = tmp_path_factory.mktemp("lora")
    base = write_tiny_llama(folder / "base", vocab=400)
    torch.manual_seed(0)
    writer = build_transformer(None, TransformerConfig(base_model=str(base), context=256, lora_r=4, lora_alpha=8),
                               forms=["fable", "poem", "story"], genres=["fantasy", "mystery"])
    return load_model(writer.save(folder / "saved"))


def test_a_lora_champion_is_served_with_its_base_named_and_batched_like_the_others(lora_champion):
    from dataclasses import replace

    from serving.champion import Provenance

    base = lora_champion.metadata["base"]
    prov = replace(PROV, family="transformer", base_model=base["spec"], base_license=base["license"],
                   base_attribution=base["attribution"])
    config = load_serving_config(env={})
    plain = Engine(replace(config, batching=replace(config.batching, enabled=False)),
                   loader=lambda source: LoadedModel(lora_champion, prov, 0.1))
    batched = Engine(replace(config, batching=replace(config.batching, enabled=True, max_latency_ms=50)),
                     loader=lambda source: LoadedModel(lora_champion, prov, 0.1))
    assert plain.load() and batched.load()
    requests = [GenerateRequest(prompt=f"A {thing} in the snow.", form="poem", max_new_tokens=10, seed=i)
                for i, thing in enumerate(["lamp", "bell", "kite", "boat"])]

    async def together():
        return await asyncio.gather(*(batched.generate_async(r) for r in requests))

    results = asyncio.run(together())
    assert [r.drafts[0].text for r in results] == [generate(plain, r).drafts[0].text for r in requests]
    assert max(batched.batch_sizes) > 1
    response = generate(plain, requests[0])
    assert response.provenance["base_model"] == base["spec"] and response.provenance["base_license"] == "apache-2.0"
    assert "base base" in Provenance(**response.provenance).short() and "(apache-2.0)" in Provenance(
        **response.provenance).short()
    with pytest.raises(RequestError, match="unknown form 'limerick'"):
        generate(plain, GenerateRequest(prompt="A fox", form="limerick"))


def test_a_logit_bias_id_the_served_model_lacks_is_a_request_error_and_a_known_one_is_applied(writer):
    engine = engine_for(writer, batching=False)
    with pytest.raises(RequestError) as err:
        generate(engine, GenerateRequest(prompt="A fox", logit_bias={writer.vocab_size: -100}))
    assert err.value.field == "logit_bias" and str(writer.vocab_size) in str(err.value)
    plain = generate(engine, GenerateRequest(prompt="A fox finds a key.", max_new_tokens=12, seed=3))
    from models.tokenizer import decode_ids, encode_text

    word = encode_text(writer.tokenizer, "fox")[0]  # forced: every token written is this one
    forced = generate(engine, GenerateRequest(prompt="A fox finds a key.", max_new_tokens=12, seed=3,
                                              logit_bias={word: 100}))
    assert forced.drafts[0].text != plain.drafts[0].text and forced.settings["logit_bias"] == {word: 100.0}
    assert forced.drafts[0].text.replace(decode_ids(writer.tokenizer, [word]).strip(), "").strip() == ""


def test_banned_phrases_and_word_bias_reach_the_writing_models_sampler(writer):
    from models.banning import find_phrase

    engine = engine_for(writer, batching=False)
    ask = {"prompt": "A fox finds a key.", "max_new_tokens": 30, "seed": 3}
    plain = generate(engine, GenerateRequest(**ask)).drafts[0].text
    word = next(w for w in plain.split()[1:] if w.isalpha() and len(w) > 1)
    kept_out = generate(engine, GenerateRequest(**ask, banned_phrases=[word]))
    assert find_phrase(kept_out.drafts[0].text, [word]) == "" and list(kept_out.settings["banned_phrases"]) == [word]
    ids = writer.word_token_ids(word)  # the word's first token as it starts a line, after a space, capitalised
    assert ids and all(isinstance(i, int) for i in ids)
    biased = generate(engine, GenerateRequest(**ask, word_bias={word: -100}))
    assert biased.settings["logit_bias"] == dict.fromkeys(ids, -100.0)
    both = generate(engine, GenerateRequest(**ask, word_bias={word: -100}, logit_bias={ids[0]: 5}))
    assert both.settings["logit_bias"][ids[0]] == 5.0  # an id logit_bias names keeps its own bias
    for bad in ({"two words": 1}, {"x" * 41: 1}, {"fox": 101}):
        with pytest.raises(ValidationError):
            GenerateRequest(prompt="A fox", word_bias=bad)
    with pytest.raises(ValidationError):
        GenerateRequest(prompt="A fox", banned_phrases=["?"])  # a phrase needs a letter or digit


def test_openai_fields_map_onto_the_generate_request():
    from serving.openai_compat import ChatRequest, CompletionRequest, OpenAIError, generate_request

    planner = RequestPlanner()
    req = CompletionRequest(model="m", prompt=["A fox."], max_tokens=30, temperature=0, n=2, seed=4, stop="\n\n",
                            form="fable", min_p=0.1)
    gen = generate_request(planner, req, "A fox.")
    assert (gen.max_new_tokens, gen.num_drafts, gen.seed, gen.form, gen.min_p) == (30, 2, 4, "fable", 0.1)
    assert (gen.temperature, gen.top_k) == (1.0, 1) and tuple(gen.stop) == ("\n\n",)  # temperature 0 is greedy
    assert generate_request(planner, CompletionRequest(model="m", prompt="x"), "x").max_new_tokens == 128
    chat = ChatRequest(model="m", messages=[{"role": "user", "content": "x"}], max_completion_tokens=12)
    assert generate_request(planner, chat, "x").max_new_tokens == 12
    biased = generate_request(planner, CompletionRequest(model="m", prompt="x", logit_bias={"12": -100}), "x")
    assert biased.logit_bias == {12: -100.0}  # OpenAI's string ids
    for bad in ({"twelve": 1}, {"12": 500}):
        with pytest.raises(OpenAIError) as err:
            generate_request(planner, CompletionRequest(model="m", prompt="x", logit_bias=bad), "x")
        assert err.value.status == 400 and err.value.param.startswith("logit_bias")
    with pytest.raises(OpenAIError) as err:
        generate_request(planner, CompletionRequest(model="m", prompt="x", frequency_penalty=0.5), "x")
    assert err.value.param == "frequency_penalty" and "repetition_penalty" in err.value.message
    with pytest.raises(OpenAIError) as err:
        generate_request(planner, ChatRequest(model="m", messages=[{"role": "user", "content": " "}]), " ", "messages")
    assert err.value.param == "messages" and err.value.status == 400


def test_chat_messages_become_the_prompt_and_the_conversation():
    from serving.openai_compat import Message, OpenAIError, chat_prompt

    messages = [Message(role="system", content="Be brief."), Message(role="user", content="Write of a mill."),
                Message(role="assistant", content="The mill stood still."),
                Message(role="user", content=[{"type": "text", "text": "Now "}, {"type": "text", "text": "a fox."}])]
    prompt, chat = chat_prompt(messages, uses_chat=True)
    assert prompt == "Now a fox." and chat.system == "Be brief."
    assert chat.history == (("user", "Write of a mill."), ("assistant", "The mill stood still."))
    assert chat_prompt(messages, uses_chat=False)[1].history == ()  # families without a chat template
    with pytest.raises(OpenAIError, match=names("last message", "user")):
        chat_prompt(messages[:3], uses_chat=True)
    with pytest.raises(OpenAIError, match="image_url"):
        chat_prompt([Message(role="user", content=[{"type": "image_url", "image_url": {"url": "x"}}])], True)


def test_one_set_of_sampling_limits_for_the_settings_the_api_and_the_openai_layer():
    from models.contract import GenerationSettings
    from models.params import bounds
    from serving.openai_compat import CompletionRequest

    highs = {name: bounds(name)[1] for name in ("temperature", "top_k", "repetition_penalty")}
    for model in (GenerateRequest, CompletionRequest):
        props = model.model_json_schema()["properties"]
        found = {name: next(b["maximum"] for b in props[name]["anyOf"] if "maximum" in b) for name in highs}
        assert found == highs, model
    GenerationSettings(**highs)
    for field, value in highs.items():
        with pytest.raises(ValueError, match=field):
            GenerationSettings(**{field: value + 1})


def test_a_writer_that_writes_on_continues_the_manuscript_end(lora_champion):
    from models.contract import GenerationSettings
    from serving.planner import Chat

    engine = Engine(load_serving_config(env={}), loader=lambda source: LoadedModel(lora_champion, PROV, 0.1))
    assert engine.load() and lora_champion.writes_on
    manuscript = "Wren climbed the hill at dawn. The mill door stood open, and inside"
    request = GenerateRequest(prompt="A girl finds an abandoned mill.", max_new_tokens=12, seed=5)
    settings, pieces = engine.stream(request, Chat(lead=manuscript))
    text = "".join(pieces)
    assert settings.lead == manuscript
    plain = GenerationSettings(max_new_tokens=12, seed=5, temperature=0.8, top_k=50, top_p=0.95,
                               repetition_penalty=1.1)
    assert text == lora_champion.generate([request.prompt], plain.replace(lead=manuscript))[0]
    assert text != lora_champion.generate([request.prompt], plain)[0]  # the lead is read
    long_lead = "word " * 2000
    cfg = lora_champion.config
    window = cfg.context - cfg.max_prompt_tokens - 64 - cfg.context // 4  # the prompt, the frame, the new text
    assert len(lora_champion.lead_ids(long_lead)) == lora_champion.lead_window() == window > 0
    assert lora_champion.lead_ids("   ") == []
    chances = lora_champion.token_chances(request.prompt, text, settings)
    assert chances and all(0 <= c.p <= 1 for c in chances)
