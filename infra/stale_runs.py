"""Runs whose process died stay "running" in ZenML forever: mark them failed, with the reason.

``run.py`` records who runs each pipeline (host, process id and the process's start time) in the run
configuration's ``extra`` (not part of any cache key). At the next start it looks for runs still
marked initializing/running whose recorded process is gone (or whose process id now belongs to
another process) on this host, and marks them and their unfinished steps failed. Runs started some
other way (no record) or on another host are left alone: nothing here can tell whether they still run.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

OWNER_KEY = "cw_owner"
UNFINISHED = ("initializing", "provisioning", "queued", "running", "retrying", "resuming")


def owner_record(pid: int | None = None) -> dict[str, Any]:
    """What ``run.py`` stores in the run configuration's ``extra``: this host, this process and its start time."""
    import psutil

    process = psutil.Process(pid or os.getpid())
    return {"host": socket.gethostname(), "pid": process.pid, "started": round(process.create_time(), 2)}


def process_gone(owner: dict[str, Any]) -> str:
    """Why the recorded process no longer runs ('' when it still does, or when it is not on this host)."""
    import psutil

    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return ""
    try:
        started = psutil.Process(owner["pid"]).create_time()
    except psutil.NoSuchProcess:
        return f"its process (pid {owner['pid']}) is gone"
    if abs(started - float(owner.get("started", 0))) > 1.0:
        return f"its process (pid {owner['pid']}) is gone (the id now belongs to another process)"
    return ""


@dataclass(frozen=True)
class StaleRun:
    """A run marked failed, and why."""

    name: str
    reason: str


def mark_stale_runs(client: Any = None) -> list[StaleRun]:
    """Marks this host's dead ``run.py`` runs (and their unfinished steps) failed.

    Args:
        client: A ZenML ``Client`` (the default one when None).

    Returns:
        The runs marked, with reasons.
    """
    from zenml.client import Client
    from zenml.models.v2.misc.exception_info import ExceptionInfo
    from zenml.orchestrators.publish_utils import publish_failed_pipeline_run, publish_failed_step_run

    client = client or Client()
    marked = []
    for run in client.list_pipeline_runs(status="oneof:" + json.dumps(UNFINISHED), size=100).items:
        reason = process_gone((run.config.extra or {}).get(OWNER_KEY) or {})
        if not reason:
            continue
        for step in run.steps.values():
            if str(step.status.value) in UNFINISHED:
                publish_failed_step_run(step.id)
        message = f"marked failed by run.py: {reason}; a rerun continues from the cached steps"
        publish_failed_pipeline_run(run.id, ExceptionInfo(traceback="", message=message))
        marked.append(StaleRun(run.name, reason))
    return marked
