"""The team services on one machine: PostgreSQL and an MLflow tracking server that proxies artifacts.

    python -m infra.team up        # initialise (once) and start both, wait for health, print how to use them
    python -m infra.team status    # what runs, on which ports
    python -m infra.team down      # stop exactly what `up` started (by pid file and pg_ctl)

Everything lives in a folder the script owns (``.team/`` in the checkout, or ``--root``): the PostgreSQL
cluster (``pg/``), the artifacts the MLflow server stores for its clients (``artifacts/``), logs and pid
files. PostgreSQL listens on loopback only; the MLflow server's role has a random password written once to
``pg/password`` (mode 0600) and given to the server through its environment, never written in a config.
Run as root, the database runs as the ``postgres`` system user (PostgreSQL refuses root).

The MLflow server is the team's tracking server *and* model registry (``--serve-artifacts``: clients send
artifacts through it, so they need no access to its disk). Point MLflow clients at it with
``MLFLOW_TRACKING_URI=http://127.0.0.1:5050``; elsewhere the same server runs on a shared host.

Not here yet (issue #17): a ZenML server, ``run.py --stack team`` and multi-process training.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from core.paths import PROJECT_ROOT

DB_NAME, DB_USER = "mlflow", "creative_writer"


class TeamError(RuntimeError):
    """A team service could not be set up, started or stopped (the message says which and why)."""


@dataclass(frozen=True)
class TeamLayout:
    """Where the team services live and listen.

    Attributes:
        root: The folder the script owns.
        pg_port: PostgreSQL's loopback port.
        mlflow_port: The MLflow server's loopback port.
    """

    root: Path = PROJECT_ROOT / ".team"
    pg_port: int = 5433
    mlflow_port: int = 5050

    @property
    def pg_data(self) -> Path:
        """The PostgreSQL cluster."""
        return self.root / "pg" / "data"

    @property
    def password_file(self) -> Path:
        """The MLflow role's password (0600)."""
        return self.root / "pg" / "password"

    @property
    def mlflow_pid(self) -> Path:
        """The MLflow server's pid file."""
        return self.root / "mlflow.pid"

    @property
    def tracking_uri(self) -> str:
        """What MLflow clients use."""
        return f"http://127.0.0.1:{self.mlflow_port}"


def pg_bin(name: str) -> str:
    """A PostgreSQL server program (``initdb``, ``pg_ctl``, ``psql``), from PATH or Debian's versioned folder.

    Raises:
        TeamError: If PostgreSQL is not installed (the message says how to install it).
    """
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    for folder in versions:
        if (folder / name).is_file():
            return str(folder / name)
    raise TeamError(f"PostgreSQL's {name} not found: install the server (apt-get install postgresql)")


def _as_db_user(command: list[str]) -> list[str]:
    """Runs a PostgreSQL program as the ``postgres`` system user when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        raise TeamError("running as root needs runuser to start PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--", *command]


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    if result.returncode != 0:
        raise TeamError(f"{what} failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()[-800:]}")
    return result.stdout


def _own(path: Path) -> None:
    """Hands a folder to the postgres user when we are root (PostgreSQL must own its cluster)."""
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def psql(layout: TeamLayout, sql: str, database: str = "postgres") -> str:
    """Runs one SQL statement as the cluster's superuser (over its socket folder); returns the rows as text."""
    return _run(_as_db_user([pg_bin("psql"), "-h", str(layout.root / "pg"), "-p", str(layout.pg_port), "-U",
                             "postgres", "-d", database, "-tAc", sql]), f"psql {sql[:40]!r}")


def postgres_running(layout: TeamLayout) -> bool:
    """Whether the cluster's server runs."""
    if not (layout.pg_data / "PG_VERSION").is_file():
        return False
    status = subprocess.run(_as_db_user([pg_bin("pg_ctl"), "-D", str(layout.pg_data), "status"]),
                            capture_output=True, text=True, timeout=30)
    return status.returncode == 0


def start_postgres(layout: TeamLayout) -> str:
    """Initialises the cluster once, starts it on loopback, creates the MLflow role and database.

    Returns:
        The SQLAlchemy URI of the MLflow database (with the role's password).
    """
    pg_dir = layout.root / "pg"
    pg_dir.mkdir(parents=True, exist_ok=True)
    _own(pg_dir)
    if os.geteuid() == 0 and subprocess.run(_as_db_user(["test", "-w", str(pg_dir)]), timeout=30).returncode != 0:
        raise TeamError(f"the postgres user cannot reach {pg_dir} (a folder above it is private to root); "
                        "put the services elsewhere, e.g. --root /srv/creative-writer-team")
    if not (layout.pg_data / "PG_VERSION").is_file():
        _run(_as_db_user([pg_bin("initdb"), "-D", str(layout.pg_data), "-U", "postgres", "--auth-local=trust",
                          "--auth-host=scram-sha-256", "-E", "UTF8"]), "initdb")
    if not layout.password_file.is_file():
        layout.password_file.write_text(secrets.token_urlsafe(24))
        layout.password_file.chmod(0o600)
    if not postgres_running(layout):
        options = f"-p {layout.pg_port} -h 127.0.0.1 -k {pg_dir}"
        _run(_as_db_user([pg_bin("pg_ctl"), "-D", str(layout.pg_data), "-o", options, "-l",
                          str(pg_dir / "server.log"), "-w", "-t", "60", "start"]), "starting PostgreSQL")
    password = layout.password_file.read_text().strip()
    if psql(layout, f"SELECT 1 FROM pg_roles WHERE rolname = '{DB_USER}'").strip() != "1":
        psql(layout, f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{password}'")
    if psql(layout, f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'").strip() != "1":
        psql(layout, f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")
    return f"postgresql://{DB_USER}:{password}@127.0.0.1:{layout.pg_port}/{DB_NAME}"


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def mlflow_healthy(layout: TeamLayout) -> bool:
    """Whether the MLflow server answers its health check."""
    import httpx

    try:
        return httpx.get(layout.tracking_uri + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_mlflow(layout: TeamLayout, database_uri: str, timeout_s: float = 120) -> int:
    """Starts the MLflow server (tracking, registry, proxied artifacts) unless it runs; waits for health.

    Returns:
        Its pid.

    Raises:
        TeamError: If it exits or is not healthy in time (with the end of its log).
    """
    running = _pid(layout.mlflow_pid)
    if running is not None and mlflow_healthy(layout):
        return running
    from infra.processes import port_in_use

    if port_in_use("127.0.0.1", layout.mlflow_port):
        raise TeamError(f"port {layout.mlflow_port} is taken by something else; choose another (--mlflow-port)")
    artifacts = layout.root / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log_path = layout.root / "mlflow.log"
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": database_uri}  # the password stays out of argv
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(layout.mlflow_port),
               "--serve-artifacts", "--artifacts-destination", artifacts.resolve().as_uri(), "--workers", "1"]
    with log_path.open("a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    layout.mlflow_pid.write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            layout.mlflow_pid.unlink(missing_ok=True)
            raise TeamError(f"the MLflow server exited ({process.returncode}):\n{log_path.read_text()[-2000:]}")
        if mlflow_healthy(layout):
            return process.pid
        time.sleep(0.5)
    stop_mlflow(layout)
    raise TeamError(f"the MLflow server was not healthy after {timeout_s:.0f} s:\n{log_path.read_text()[-2000:]}")


def stop_mlflow(layout: TeamLayout) -> bool:
    """Stops the MLflow server this script started (its whole process group); returns whether one ran."""
    import signal

    pid = _pid(layout.mlflow_pid)
    layout.mlflow_pid.unlink(missing_ok=True)
    if pid is None:
        return False
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
    return True


def up(layout: TeamLayout) -> dict[str, str]:
    """Starts PostgreSQL and the MLflow server (idempotent); returns how to reach them."""
    database_uri = start_postgres(layout)
    start_mlflow(layout, database_uri)
    return {"tracking_uri": layout.tracking_uri, "postgres": f"127.0.0.1:{layout.pg_port}/{DB_NAME}",
            "artifacts": str(layout.root / "artifacts")}


def down(layout: TeamLayout) -> list[str]:
    """Stops what :func:`up` started; returns what was stopped."""
    stopped = []
    if stop_mlflow(layout):
        stopped.append("mlflow")
    if postgres_running(layout):
        _run(_as_db_user([pg_bin("pg_ctl"), "-D", str(layout.pg_data), "-m", "fast", "-w", "stop"]),
             "stopping PostgreSQL")
        stopped.append("postgres")
    return stopped


def status(layout: TeamLayout) -> dict[str, object]:
    """What runs: PostgreSQL, the MLflow server (pid and health) and the layout."""
    return {"postgres": postgres_running(layout), "mlflow_pid": _pid(layout.mlflow_pid),
            "mlflow_healthy": mlflow_healthy(layout), **{k: str(v) for k, v in asdict(layout).items()}}


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.team up|down|status``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--root", type=Path, default=TeamLayout.root, help="the folder the services live in")
    parser.add_argument("--pg-port", type=int, default=TeamLayout.pg_port)
    parser.add_argument("--mlflow-port", type=int, default=TeamLayout.mlflow_port)
    args = parser.parse_args(argv)
    layout = TeamLayout(args.root.resolve(), args.pg_port, args.mlflow_port)
    try:
        if args.action == "up":
            started = time.perf_counter()
            where = up(layout)
            print(f"team services up in {time.perf_counter() - started:.1f} s: MLflow {where['tracking_uri']} "
                  f"(PostgreSQL {where['postgres']}, artifacts in {where['artifacts']})")
            print(f"use them: export MLFLOW_TRACKING_URI={where['tracking_uri']}")
            print("stop them: python -m infra.team down")
        elif args.action == "down":
            stopped = down(layout)
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        else:
            print(json.dumps(status(layout), indent=2))
    except TeamError as exc:
        print(f"infra.team: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
