"""Which processes hold a port or carry a marker in their environment, and stopping them in order.

Deployments use this to tell their own servers (marked by environment variables they set for the
daemon, which BentoML's workers inherit) from anything else on the port, and to stop the workers an
earlier deployment left behind when its supervisor died.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessInfo:
    """One process, as people need to see it in a message.

    Attributes:
        pid: Its process id.
        command: Its command line (shortened).
        marker: The value of the environment marker looked for ('' when it has none).
    """

    pid: int
    command: str
    marker: str = ""

    def describe(self) -> str:
        """``pid 123 (python -m http.server 3000)``."""
        return f"pid {self.pid} ({self.command})"


def _marker(process, name: str) -> str:  # noqa: ANN001 - a psutil.Process
    """The value of environment variable ``name`` the process started with ('' if absent or unreadable)."""
    import psutil

    try:
        return process.environ().get(name, "")
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def _info(process, marker: str = "") -> ProcessInfo:  # noqa: ANN001 - a psutil.Process
    import psutil

    try:
        command = " ".join(process.cmdline()) or process.name()
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        command = "command line not readable"
    if len(command) > 120:
        command = command[:117] + "..."
    return ProcessInfo(process.pid, command, marker)


def free_port() -> int:
    """A loopback TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails now (someone listens on it, or on all interfaces)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no holder
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def listeners(port: int, marker_name: str = "") -> list[ProcessInfo]:
    """The processes listening on TCP ``port`` (on any interface) that this user may see.

    Args:
        port: The TCP port.
        marker_name: An environment variable to read from each (``ProcessInfo.marker``).
    """
    import psutil

    pids = sorted({c.pid for c in psutil.net_connections(kind="tcp")
                   if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid})
    out = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            out.append(_info(process, _marker(process, marker_name) if marker_name else ""))
        except psutil.NoSuchProcess:
            continue
    return out


def marked(name: str, value: str) -> list[ProcessInfo]:
    """Processes (other than this one) whose environment at start had ``name=value``."""
    import psutil

    return [_info(process, value) for process in psutil.process_iter()
            if process.pid != os.getpid() and _marker(process, name) == value]


def terminate(processes: list[ProcessInfo], timeout: float = 15.0) -> list[ProcessInfo]:
    """SIGTERM, then SIGKILL whatever still runs after ``timeout`` seconds; returns the processes stopped."""
    import psutil

    live = []
    for info in processes:
        try:
            process = psutil.Process(info.pid)
            process.send_signal(signal.SIGTERM)
            live.append(process)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(live, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)
    stopped = {p.pid for p in live}
    return [info for info in processes if info.pid in stopped]


def wait_port_free(host: str, port: int, timeout: float) -> bool:
    """Waits up to ``timeout`` seconds for ``host:port`` to become bindable; returns whether it did."""
    deadline = time.monotonic() + timeout
    while port_in_use(host, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
