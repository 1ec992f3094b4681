"""Which recorded run owners are gone (the e2e tests kill a real run and watch it being marked failed)."""

from __future__ import annotations

import socket
import subprocess
import sys

from infra.stale_runs import owner_record, process_gone


def test_a_live_process_is_not_gone_and_a_dead_one_is():
    me = owner_record()
    assert me["host"] == socket.gethostname() and process_gone(me) == ""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    record = owner_record(child.pid)
    child.wait()
    assert process_gone(record) == f"its process (pid {child.pid}) is gone"


def test_a_reused_process_id_and_other_hosts():
    me = owner_record()
    reused = {**me, "started": me["started"] - 3600}
    assert f"pid {me['pid']}" in process_gone(reused)  # named as gone, though a process holds the id
    assert process_gone({**me, "host": "another-machine", "pid": 999_999_999}) == ""  # cannot tell: left alone
    assert process_gone({}) == ""
