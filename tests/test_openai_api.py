"""The OpenAI-compatible endpoints, driven by the official ``openai`` package against a real local server."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.serving
openai = pytest.importorskip("openai", reason="the openai package is a dev dependency (requirements-dev.txt)")

PROMPT = "A fox finds a key under a stone."
MODEL = "creative-writer"


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_model_with_provenance(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    extra = models[0].model_extra
    assert extra["provenance"]["family"] == "seq2seq" and extra["provenance"]["version"] == "1"
    assert "fable" in extra["controls"]["form"]


def test_completion_matches_generate_for_the_same_seed(client, served):
    done = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=20, seed=11, temperature=0.9,
                                     extra_body={"form": "fable", "top_k": 40})
    assert done.object == "text_completion" and done.model == MODEL
    assert done.system_fingerprint == "seq2seq-v1" and done.model_extra["seed"] == 11
    text = done.choices[0].text
    direct = httpx.post(served.url + "/generate", json={"prompt": PROMPT, "max_new_tokens": 20, "seed": 11,
                                                        "temperature": 0.9, "form": "fable", "top_k": 40},
                        timeout=60).json()["drafts"][0]
    assert text == direct["text"] and text
    assert done.usage.completion_tokens == direct["tokens"]
    assert done.usage.prompt_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.choices[0].finish_reason in {"stop", "length"}


def test_chat_completion_with_n_and_seed_reproducibility(client):
    messages = [{"role": "system", "content": "You write short fables."}, {"role": "user", "content": PROMPT}]
    first = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, n=3, seed=7)
    again = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, n=3, seed=7)
    assert first.object == "chat.completion" and len(first.choices) == 3
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert all(c.message.role == "assistant" and c.message.content for c in first.choices)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in first.choices}) > 1  # seeds 7, 8, 9 write different drafts
    # choice i is the single choice of seed + i
    single = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, seed=8)
    assert single.choices[0].message.content == first.choices[1].message.content
    # seq2seq has no chat template: it writes from the last user message alone
    plain = client.chat.completions.create(model=MODEL, messages=messages[1:], max_tokens=16, n=3, seed=7)
    assert [c.message.content for c in plain.choices] == [c.message.content for c in first.choices]


def test_streaming_completion_joins_to_the_non_streamed_text_and_ends_with_usage(client):
    done = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=30, seed=3)
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=30, seed=3, stream=True))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == done.choices[0].text
    assert chunks[-1].choices[0].finish_reason == done.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_chat_with_two_choices_and_separate_usage(client):
    messages = [{"role": "user", "content": PROMPT}]
    done = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, n=2, seed=21)
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, n=2, seed=21,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == done.usage.completion_tokens
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert [texts[0], texts[1]] == [c.message.content for c in done.choices]
    assert set(finishes) == {0, 1}
    assert chunks[0].choices[0].delta.role == "assistant"


def test_stop_strings_end_the_text_before_them(client):
    free = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, seed=5).choices[0].text
    words = free.split()
    assert len(words) > 3, free
    stop = " " + words[2]
    cut = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, seed=5, stop=stop)
    assert cut.choices[0].text == free[: free.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, seed=5, stop=[stop], stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == cut.choices[0].text


def test_logprobs_report_each_token_with_its_alternatives(client):
    done = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, seed=4, logprobs=3)
    choice = done.choices[0]
    assert "".join(choice.logprobs.tokens) == choice.text and choice.text
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs)
    assert all(1 <= len(top) <= 3 for top in choice.logprobs.top_logprobs)
    assert choice.logprobs.text_offset[0] == 0 and choice.logprobs.text_offset == sorted(choice.logprobs.text_offset)
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=16,
                                          seed=4, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert "".join(t.token for t in content) == chat.choices[0].message.content
    assert all(len(t.top_logprobs) <= 2 and t.logprob <= 0 for t in content)
    greedy = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=1)
    assert set(greedy.choices[0].logprobs.token_logprobs) == {0.0}  # top-k 1: each token was certain


def test_temperature_zero_is_greedy(client):
    texts = {client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0,
                                       seed=s).choices[0].text for s in (1, 2, 3)}
    assert len(texts) == 1


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": 1.0}, "frequency_penalty"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 9}, "n"),
    ({"temperature": -1}, "temperature"),
    ({"logprobs": 9}, "logprobs"),
    ({"logprobs": 2, "stream": True}, "logprobs"),
    ({"echo": True}, "echo"),
    ({"extra_body": {"form": "limerick"}}, "form"),
    ({"extra_body": {"typical_p": 0.5}}, "typical_p"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": "   "}, "prompt"),
])
def test_bad_parameters_get_an_openai_error_naming_them(client, kwargs, param):
    args = {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**args)
    body = err.value.body
    assert err.value.status_code == 400 and body["param"] == param and body["message"], body
    assert body["type"] == "invalid_request_error"


def test_unknown_model_and_chat_ending_with_assistant(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="gpt-4o", prompt=PROMPT, max_tokens=8)
    assert err.value.body["code"] == "model_not_found" and MODEL in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, max_tokens=8, messages=[
            {"role": "user", "content": PROMPT}, {"role": "assistant", "content": "Once"}])
    assert err.value.body["param"] == "messages"


def test_malformed_body_and_wrong_content_type_get_openai_errors(served):
    bad = httpx.post(served.url + "/v1/completions", content=b'{"model": ', timeout=30,
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    form = httpx.post(served.url + "/v1/chat/completions", data={"model": MODEL}, timeout=30)
    assert form.status_code == 415 and "application/json" in form.json()["error"]["message"]


def test_requests_are_counted_in_the_metrics(client, served):
    client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, seed=1)
    metrics = httpx.get(served.url + "/metrics", timeout=30).text
    assert 'endpoint="v1_completions",outcome="ok"' in metrics.replace(" ", "")


def test_the_token_guard_is_the_api_key(guarded_empty):
    wrong = openai.OpenAI(base_url=guarded_empty.url + "/v1", api_key="nope", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.models.list()
    assert err.value.body["code"] == "invalid_api_key"
    right = openai.OpenAI(base_url=guarded_empty.url + "/v1", api_key="s3cret", max_retries=0, timeout=30)
    with pytest.raises(openai.InternalServerError) as err:  # past the guard: nothing is served yet
        right.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4)
    assert err.value.status_code == 503 and err.value.body["code"] == "model_not_ready"
    raw = httpx.post(guarded_empty.url + "/v1/completions", timeout=30, content=json.dumps({"model": MODEL}),
                     headers={"content-type": "application/json"})
    assert raw.status_code == 401 and raw.json()["error"]["type"] == "invalid_request_error"
