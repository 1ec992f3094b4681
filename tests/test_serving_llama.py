"""The service on the llama.cpp runtime over real HTTP: a tiny Llama + LoRA champion served from its GGUF export."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (requirements.txt pins it)")
pytestmark = pytest.mark.serving

BASE = {"prompt": "A fox finds a key under a stone.", "max_new_tokens": 24}


@pytest.fixture(scope="module")
def llama_served(tmp_path_factory):
    """``bentoml serve`` of the tiny champion on the profile's default runtime (llama.cpp), at most 1 in flight."""
    from infra.local_server import Server
    from tests.serving_support import register_tiny_llama_champion

    folder = tmp_path_factory.mktemp("llama-served")
    uri, _ = register_tiny_llama_champion(folder)
    profile = folder / "serving.yaml"
    profile.write_text("limits:\n  max_in_flight: 1\n")
    server = Server({"MLFLOW_TRACKING_URI": uri, "BENTOML_HOME": str(folder / "bentoml"), "CW_API_TOKEN": "",
                     "CW_SERVING_CONFIG": str(profile)}, folder / "server.log")
    try:
        server.wait(ready=True)
        yield server
    finally:
        server.stop()


def post(server, path: str, body) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def test_model_names_the_runtime_and_the_file_served(llama_served):
    info = httpx.get(llama_served.url + "/model", timeout=10).json()
    assert info["runtime"] == "llama.cpp" and info["provenance"]["runtime"] == "llama.cpp"
    assert info["provenance"]["served_file"].startswith("gguf/model.gguf sha256:")
    assert info["status"].endswith("· llama.cpp")


def test_generate_and_stream_write_the_same_text_for_a_seed(llama_served):
    first = post(llama_served, "/generate", {**BASE, "seed": 9, "num_drafts": 2}).json()
    again = post(llama_served, "/generate", {**BASE, "seed": 9, "num_drafts": 2}).json()
    assert [d["text"] for d in first["drafts"]] == [d["text"] for d in again["drafts"]]
    assert [d["seed"] for d in first["drafts"]] == [9, 10] and first["provenance"]["runtime"] == "llama.cpp"
    with httpx.stream("POST", llama_served.url + "/stream", json={**BASE, "seed": 9}, timeout=60) as response:
        streamed = "".join(response.iter_text())
    assert response.status_code == 200 and streamed == first["drafts"][0]["text"]
    stop = first["drafts"][0]["text"][3:5]
    stopped = post(llama_served, "/generate", {**BASE, "seed": 9, "stop": [stop]}).json()["drafts"][0]["text"]
    assert stop not in stopped


def test_the_openai_endpoints_stream_and_report_logprobs(llama_served):
    completion = post(llama_served, "/v1/completions", {"model": "creative-writer", "prompt": "A fox.", "max_tokens": 8,
                                                         "logprobs": 2, "seed": 3, "n": 2}).json()
    assert len(completion["choices"]) == 2
    logprobs = completion["choices"][0]["logprobs"]
    assert logprobs["tokens"] and all(v <= 0 for v in logprobs["token_logprobs"])
    body = {"model": "creative-writer", "messages": [{"role": "user", "content": "A poem about rain."}],
            "max_tokens": 8, "stream": True, "seed": 4}
    with httpx.stream("POST", llama_served.url + "/v1/chat/completions", json=body, timeout=60) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200 and events[-1] == "[DONE]"
    assert any(json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1])


def test_requests_beyond_the_in_flight_limit_get_503_with_retry_after(llama_served):
    body = {**BASE, "max_new_tokens": 200, "num_drafts": 4, "seed": 1}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(llama_served, "/generate", body), range(8)))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    busy = next(a for a in answers if a.status_code == 503)
    assert int(busy.headers["Retry-After"]) >= 1 and "busy" in busy.json()["error"]
    assert httpx.get(llama_served.url + "/model", timeout=10).json()["load"]["refused"] >= 1


def test_a_truncated_export_leaves_the_server_up_and_says_why(tmp_path):
    from infra.local_server import Server
    from tests.serving_support import register_tiny_llama_champion

    uri, logged = register_tiny_llama_champion(tmp_path)
    export = logged / "gguf" / "model.gguf"
    export.write_bytes(export.read_bytes()[:1000])
    server = Server({"MLFLOW_TRACKING_URI": uri, "BENTOML_HOME": str(tmp_path / "bentoml"), "CW_API_TOKEN": ""},
                    tmp_path / "server.log")
    try:
        server.wait(ready=False)
        deadline = time.monotonic() + 90
        ready = httpx.get(server.url + "/readyz", timeout=10)
        while "is loading" in ready.text and time.monotonic() < deadline:  # until the load has failed
            time.sleep(0.5)
            ready = httpx.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and "model.gguf" in ready.text and "truncated" in ready.text
        assert post(server, "/generate", BASE).status_code == 503
        torch_ok = Server({"MLFLOW_TRACKING_URI": uri, "BENTOML_HOME": str(tmp_path / "bentoml2"), "CW_API_TOKEN": "",
                           "CW_RUNTIME": "torch"}, tmp_path / "server-torch.log")
        try:  # the same registry version still serves on torch
            torch_ok.wait(ready=True)
            assert post(torch_ok, "/generate", BASE).json()["provenance"]["runtime"] == "torch"
        finally:
            torch_ok.stop()
    finally:
        server.stop()
