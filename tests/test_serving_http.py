"""The BentoML service over real HTTP: a ``bentoml serve`` subprocess on a free loopback port."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = pytest.mark.serving

BASE = {"prompt": "A fox finds a key under a stone.", "max_new_tokens": 24}


def post(server, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60, **kwargs)


def test_generate_returns_drafts_with_provenance_and_timings(served):
    response = post(served, "/generate", {**BASE, "num_drafts": 2, "seed": 5, "form": "fable", "genre": "fantasy"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert [d["seed"] for d in data["drafts"]] == [5, 6]
    assert all(d["text"] and d["tokens"] > 0 for d in data["drafts"])
    prov = data["provenance"]
    assert (prov["family"], prov["version"], prov["alias"], prov["training_run_id"]) == \
        ("seq2seq", "1", "champion", "0123456789abcdef")
    assert prov["mlflow_run_id"] and prov["metrics"]["ppl_word"] == 12.5
    assert data["settings"]["form"] == "fable" and data["settings"]["seed"] == 5
    assert data["timings"]["total_ms"] >= data["timings"]["generate_ms"] > 0


def test_same_seed_same_text_and_no_seed_gets_one_back(served):
    first = post(served, "/generate", {**BASE, "seed": 42}).json()["drafts"][0]
    again = post(served, "/generate", {**BASE, "seed": 42}).json()["drafts"][0]
    other = post(served, "/generate", {**BASE, "seed": 43}).json()["drafts"][0]
    assert first["text"] == again["text"] and first["text"] != other["text"]
    picked = post(served, "/generate", BASE).json()["drafts"][0]
    replay = post(served, "/generate", {**BASE, "seed": picked["seed"]}).json()["drafts"][0]
    assert replay["text"] == picked["text"]


def test_stream_sends_chunks_that_join_to_the_generated_text(served):
    chunks = []
    with httpx.stream("POST", served.url + "/stream", json={**BASE, "max_new_tokens": 40, "seed": 9},
                      timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["x-seed"] == "9" and response.headers["x-model-family"] == "seq2seq"
        chunks = [c for c in response.iter_text() if c]
    assert len(chunks) > 1
    whole = post(served, "/generate", {**BASE, "max_new_tokens": 40, "seed": 9}).json()["drafts"][0]["text"]
    assert "".join(chunks) == whole


@pytest.mark.parametrize(("body", "field"), [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   \n\t "}, "prompt"),
    ({"prompt": "x" * 1001}, "prompt"),
    ({"prompt": "A fox", "max_new_tokens": "many"}, "max_new_tokens"),
    ({"prompt": 12}, "prompt"),
    ({"prompt": "A fox", "temperature": 0}, "temperature"),
    ({"prompt": "A fox", "temperature": -1}, "temperature"),
    ({"prompt": "A fox", "top_p": 1.5}, "top_p"),
    ({"prompt": "A fox", "num_drafts": 5}, "num_drafts"),
    ({"prompt": "A fox", "form": "limerick"}, "form"),
    ({"prompt": "A fox", "genre": "romance"}, "genre"),
    ({"prompt": "A fox\x00 with a null"}, "prompt"),
    ({"prompt": "A fox\x1b[31m in red"}, "prompt"),
    ({"prompt": "A dragon 🐉 at sea"}, "prompt"),
    ({"prompt": "A fox", "temprature": 0.5}, "temprature"),
    ({"prompt": "A fox", "seed": -3}, "seed"),
    ({"prompt": "A fox", "preset": "calm"}, "preset"),
    ({"prompt": "A fox", "min_p": 1.0}, "min_p"),
    ({"prompt": "A fox", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "A fox", "stop": [""]}, "stop"),
    ({"prompt": "A fox", "stop": "END"}, "stop"),
])
def test_bad_input_gets_a_400_naming_the_field(served, body, field):
    for path in ("/generate", "/stream"):
        response = post(served, path, body)
        assert response.status_code == 400, (path, body, response.text)
        assert field in response.text, response.text


def test_presets_min_p_and_stop_strings(served):
    reply = post(served, "/generate", {**BASE, "preset": "steady", "seed": 3})
    assert reply.status_code == 200, reply.text
    settings = reply.json()["settings"]
    assert settings["preset"] == "steady" and settings["temperature"] == 0.7 and settings["min_p"] == 0.05
    own = post(served, "/generate", {**BASE, "preset": "steady", "temperature": 1.3, "seed": 3}).json()["settings"]
    assert own["temperature"] == 1.3 and own["top_k"] == 40  # what the request sets wins over the preset
    plain = post(served, "/generate", {**BASE, "seed": 3, "max_new_tokens": 48}).json()["drafts"][0]["text"]
    assert len(plain) > 4
    stop = plain[len(plain) // 2: len(plain) // 2 + 3]  # a string the seed is known to write
    cut = post(served, "/generate", {**BASE, "seed": 3, "max_new_tokens": 48, "stop": [stop]}).json()
    assert cut["drafts"][0]["text"] == plain[: plain.find(stop)] and cut["settings"]["stop"] == [stop]
    streamed = post(served, "/stream", {**BASE, "seed": 3, "max_new_tokens": 48, "stop": [stop]})
    assert streamed.status_code == 200 and streamed.text == plain[: plain.find(stop)]


def test_malformed_json_huge_body_and_the_server_keeps_serving(served):
    bad = httpx.post(served.url + "/generate", content=b'{"prompt": "A fox", ', timeout=30,
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400
    huge = httpx.post(served.url + "/generate", content=json.dumps({"prompt": "a" * 10_000_000}).encode(),
                      headers={"content-type": "application/json"}, timeout=60)
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]

    def chunked():
        for _ in range(200):
            yield b"a" * 1024

    streamed = httpx.post(served.url + "/generate", content=chunked(), timeout=60,
                          headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert post(served, "/generate", BASE).status_code == 200


def test_sixteen_concurrent_requests_are_written_or_refused_at_once_and_retried(served):
    def one(i: int) -> httpx.Response:
        return post(served, "/generate", {**BASE, "seed": i, "num_drafts": 1 + i % 2})

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    refused = [i for i, r in enumerate(results) if r.status_code == 503]
    assert all(r.status_code == 200 for i, r in enumerate(results) if i not in refused), \
        [r.text for r in results if r.status_code not in (200, 503)][:2]
    assert len(refused) <= 16 - 8  # limits.max_in_flight (8): at least that many are written
    for i in refused:  # refused at once with a time to come back, never by timing out
        assert int(results[i].headers["Retry-After"]) >= 1 and "busy" in results[i].json()["error"]
        time.sleep(int(results[i].headers["Retry-After"]))
        results[i] = one(i)
        assert results[i].status_code == 200, results[i].text
    # batching never changes what a seed writes
    alone = post(served, "/generate", {**BASE, "seed": 3, "num_drafts": 2}).json()["drafts"][0]["text"]
    assert results[3].json()["drafts"][0]["text"] == alone


def test_model_info_metrics_docs_and_ui_page(served):
    info = httpx.get(served.url + "/model", timeout=10).json()
    assert info["ready"] and info["provenance"]["version"] == "1" and info["metrics"]["ppl_word"] == 12.5
    assert "fable" in info["controls"]["form"] and info["limits"]["max_drafts"] == 4
    post(served, "/generate", BASE)
    metrics = httpx.get(served.url + "/metrics", timeout=10).text
    assert 'creative_writer_requests_total{endpoint="generate",outcome="ok"}' in metrics
    assert "creative_writer_tokens_total" in metrics and "bentoml_service_request_duration_seconds" in metrics
    spec = httpx.get(served.url + "/docs.json", timeout=10).json()
    text = json.dumps(spec)
    assert "/generate" in spec["paths"] and "/stream" in spec["paths"]
    assert "draft i uses seed + i" in text and "num_drafts" in text
    page = httpx.get(served.url + "/ui/", timeout=30)
    assert page.status_code == 200 and "gradio" in page.text.lower()


def test_token_guard_and_not_ready_without_a_champion(guarded_empty):
    server = guarded_empty
    assert httpx.get(server.url + "/livez", timeout=10).status_code == 200
    deadline = time.monotonic() + 60
    while "loading" in (ready := httpx.get(server.url + "/readyz", timeout=10)).text and time.monotonic() < deadline:
        time.sleep(0.3)  # the first look at the registry is still running
    assert ready.status_code == 503 and "no registered model 'creative-writer'" in ready.text
    assert "python run.py --pipeline training" in ready.text
    denied = post(server, "/generate", BASE)
    assert denied.status_code == 401 and "bearer token" in denied.json()["error"]
    assert post(server, "/generate", BASE, headers={"Authorization": "Bearer wrong"}).status_code == 401
    allowed = post(server, "/generate", BASE, headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 503 and "no registered model" in allowed.json()["error"]
    assert httpx.get(server.url + "/ui/", timeout=10).status_code == 401
    login = httpx.get(server.url + "/ui/?token=s3cret", timeout=10)
    assert login.status_code == 303 and "cw_token=s3cret" in login.headers["set-cookie"]
    assert httpx.get(server.url + "/ui/", cookies={"cw_token": "s3cret"}, timeout=30).status_code == 200
    assert "no registered model" in server.log()


@pytest.mark.parametrize("damage", ["corrupt", "delete"])
def test_a_champion_with_broken_artifacts_starts_says_why_and_crashes_nothing(tmp_path, tiny_tokenizer, damage):
    """The champion's weights truncated, or its artifacts deleted: the server runs and explains itself."""
    import shutil

    from infra.local_server import Server
    from tests.serving_support import register_tiny_champion

    uri = register_tiny_champion(tmp_path, tiny_tokenizer)
    weights = list((tmp_path / "artifacts").rglob("model.pt"))
    assert len(weights) == 1
    if damage == "corrupt":
        weights[0].write_bytes(weights[0].read_bytes()[:100])
    else:
        shutil.rmtree(tmp_path / "artifacts")
    server = Server({"MLFLOW_TRACKING_URI": uri, "BENTOML_HOME": str(tmp_path / "bentoml"), "CW_API_TOKEN": ""},
                    tmp_path / "server.log")
    try:
        server.wait(ready=False)
        deadline = time.monotonic() + 60
        while "the model is loading" in (ready := httpx.get(server.url + "/readyz", timeout=10)).text:
            assert time.monotonic() < deadline, "still loading after 60 s"
            time.sleep(0.3)
        assert ready.status_code == 503, ready.text
        assert "loading models:/creative-writer@champion failed:" in ready.text, ready.text
        info = httpx.get(server.url + "/model", timeout=10).json()
        assert info["ready"] is False and "failed" in info["status"]
        refused = post(server, "/generate", BASE)
        assert refused.status_code == 503 and "no model is being served" in refused.json()["error"]
        assert post(server, "/stream", BASE).status_code == 503
        assert httpx.get(server.url + "/ui/", timeout=30).status_code == 200
        assert httpx.get(server.url + "/livez", timeout=10).status_code == 200
        assert server.process.poll() is None  # still running
    finally:
        server.stop()
