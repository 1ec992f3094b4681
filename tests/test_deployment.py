"""Deployment safety without a deployment: who holds a port, whose processes are whose, the Bento's packages.

The end-to-end deployment faults (a killed worker, a killed supervisor, a foreign process on the port)
run in ``tests/test_e2e_serving.py`` against real deployments.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.bento_deployment import DeploymentError, check_port, leftovers, stop_leftovers, verify_serving
from infra.processes import free_port, listeners, port_in_use, terminate
from serving.config import DEPLOYMENT_ROOT_ENV
from serving.deploy import python_options
from tests.conftest import names

LISTEN = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); " \
         "print('up', flush=True); time.sleep(120)"


@pytest.fixture
def listener(request):
    """A subprocess listening on a free loopback port; ``request.param`` is extra environment."""
    import os

    port = free_port()
    env = {**os.environ, **(getattr(request, "param", None) or {})}
    process = subprocess.Popen([sys.executable, "-c", LISTEN, str(port)], env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "up"
    yield process, port
    process.kill()
    process.wait(5)


def test_a_free_port_passes_and_a_foreign_holder_is_named_with_how_to_free_it(listener):
    process, port = listener
    check_port("127.0.0.1", free_port())
    assert port_in_use("127.0.0.1", port)
    assert [p.pid for p in listeners(port)] == [process.pid]
    with pytest.raises(DeploymentError) as error:
        check_port("127.0.0.1", port)
    message = str(error.value)
    assert all(part in message for part in (str(port), f"pid {process.pid}", f"kill {process.pid}"))
    assert "--port" in message and "\n" not in message


@pytest.mark.parametrize("listener", [{DEPLOYMENT_ROOT_ENV: "/somewhere/else/checkout"}], indirect=True)
def test_another_checkouts_deployment_is_named_and_not_taken_over(listener, tmp_path):
    process, port = listener
    with pytest.raises(DeploymentError, match=names(
            "/somewhere/else/checkout", "`python -m infra.bento_deployment stop`")):
        check_port("127.0.0.1", port, root=tmp_path)
    assert process.pid not in [p.pid for p in leftovers(tmp_path)]  # nor is it stopped as one of ours


def test_this_checkouts_leftover_holds_the_port_legitimately_and_is_stopped(tmp_path):
    import os

    port = free_port()
    env = {**os.environ, DEPLOYMENT_ROOT_ENV: str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-c", LISTEN, str(port)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "up"
        check_port("127.0.0.1", port, root=tmp_path)  # the deployment being replaced: no refusal
        assert [p.pid for p in leftovers(tmp_path)] == [process.pid]
        stopped = stop_leftovers(tmp_path, timeout=5)
        assert [p.pid for p in stopped] == [process.pid] and process.wait(5) is not None
        assert not port_in_use("127.0.0.1", port) and leftovers(tmp_path) == []
    finally:
        process.kill()


def test_terminate_kills_what_ignores_sigterm():
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); " \
             "time.sleep(120)"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "up"
    from infra.processes import ProcessInfo

    started = time.monotonic()
    assert [p.pid for p in terminate([ProcessInfo(process.pid, "python")], timeout=1)] == [process.pid]
    import psutil

    process.wait(5)  # psutil reaped it already: the return code is lost, the pid is gone
    assert not psutil.pid_exists(process.pid) and 1 <= time.monotonic() - started < 10  # SIGTERM ignored: killed


def test_verify_serving_refuses_another_deployment_or_another_model(monkeypatch):
    import httpx

    documents = {"deployment": "new-id", "provenance": {"registered_name": "creative-writer", "version": "3",
                                                        "source": "creative-writer:abc"}}

    sent = []

    def fake_get(url, headers, timeout):
        sent.append(headers)
        return httpx.Response(200, json=documents, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", fake_get)
    monkeypatch.setenv("CW_API_TOKEN", "s3cret")
    assert verify_serving("http://x", "new-id", "3", "creative-writer:abc")["deployment"] == "new-id"
    assert sent == [{"Authorization": "Bearer s3cret"}]  # a guarded server is asked with its token
    with pytest.raises(DeploymentError, match=names("new-id", "other")):
        verify_serving("http://x", "other", "3")
    with pytest.raises(DeploymentError, match=names("v3", "creative-writer:abc", "v4")):
        verify_serving("http://x", "new-id", "4")
    documents["deployment"] = ""
    with pytest.raises(DeploymentError, match="a server not started by a deployment"):
        verify_serving("http://x", "new-id", "3")


def test_the_bentos_packages_come_from_requirements_txt_wherever_the_checkout_lives(tmp_path):
    hidden = tmp_path / ".cache" / "checkout"
    hidden.mkdir(parents=True)
    (hidden / "requirements.txt").write_text("# pinned\ntorch==2.13.0  # cpu\n\nbentoml==1.4.39\n")
    options = python_options({"python": {"requirements_txt": "requirements.txt", "lock_packages": False}}, hidden)
    assert options == {"lock_packages": False, "packages": ["torch==2.13.0", "bentoml==1.4.39"]}
    (hidden / "requirements.txt").write_text("torch==2.13.0\n--index-url https://example.org\n")
    with pytest.raises(ValueError, match=names("requirements.txt:2", "--index-url")):
        python_options({"python": {"requirements_txt": "requirements.txt"}}, hidden)
    with pytest.raises(FileNotFoundError, match=names("python.requirements_txt", "nope.txt")):
        python_options({"python": {"requirements_txt": "nope.txt"}}, Path(tmp_path))
