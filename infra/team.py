"""The team services on one machine: PostgreSQL, an MLflow tracking server on it and a ZenML server.

    python -m infra.team up        # initialise (once) and start all three, wait for health, print how to use them
    python -m infra.team status    # what runs, on which ports
    python -m infra.team down      # stop exactly what `up` started (by pid file and pg_ctl)

Everything lives in a folder the script owns (``.team/`` in the checkout, or ``--root``): the PostgreSQL
cluster (``pg/``), the artifacts the MLflow server stores for its clients (``artifacts/``), the ZenML
server's database and its artifact store (``zenml/``), logs and pid files. PostgreSQL listens on loopback
only; the MLflow server's role has a random password written once to ``pg/password`` (mode 0600) and
given to the server through its environment, never written in a config.
Run as root, the database runs as the ``postgres`` system user (PostgreSQL refuses root).

The MLflow server is the team's tracking server *and* model registry (``--serve-artifacts``: clients send
artifacts through it, so they need no access to its disk). Point MLflow clients at it with
``MLFLOW_TRACKING_URI=http://127.0.0.1:5050``; elsewhere the same server runs on a shared host.

The ZenML server keeps the pipelines, runs, stacks and secrets (SQLite in ``zenml/`` by default, or the
database ``--zenml-store-url`` names, e.g. ``mysql://user:password@host/zenml`` for MariaDB); it asks for a
login, whose password is written once to ``zenml/password`` (0600). ``up`` registers the ZenML secret
``cw_mlflow`` that ``stack_configs/team.yaml``'s MLflow tracker reads its token from: this MLflow server
has no authentication (loopback only), so the token is random; against a server elsewhere, create the
secret with its real token. ``python run.py --stack team`` reads :func:`client_environment` to reach the
servers; variables already set in the environment win, which is how the same ``team.yaml`` points at
servers elsewhere.
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
from collections.abc import Callable
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
        zenml_port: The ZenML server's loopback port.
        mariadb_port: MariaDB's loopback port (when the ZenML server's database is MariaDB).
    """

    root: Path = PROJECT_ROOT / ".team"
    pg_port: int = 5433
    mlflow_port: int = 5050
    zenml_port: int = 8239
    mariadb_port: int = 3307

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

    @property
    def zenml_dir(self) -> Path:
        """The ZenML server's database and configuration, and the team's ZenML client folders."""
        return self.root / "zenml"

    @property
    def mariadb_dir(self) -> Path:
        """MariaDB's folder: data, socket, pid file, log and the ``zenml`` account's password."""
        return self.root / "mariadb"

    @property
    def zenml_pid(self) -> Path:
        """The ZenML server's pid file."""
        return self.root / "zenml.pid"

    @property
    def zenml_password_file(self) -> Path:
        """The ZenML server's login password (0600)."""
        return self.zenml_dir / "password"

    @property
    def zenml_url(self) -> str:
        """What ZenML clients connect to."""
        return f"http://127.0.0.1:{self.zenml_port}"


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


def _mariadb_program(name: str) -> str:
    found = shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name)
                                         if p.is_file()), None)
    if found is None:
        raise TeamError(f"MariaDB's {name} not found: install the server (apt-get install mariadb-server)")
    return found


def mariadb_sql(layout: TeamLayout, sql: str) -> str:
    """Runs SQL as MariaDB's root account over its socket (socket authentication: no password)."""
    return _run([_mariadb_program("mariadb"), f"--socket={layout.mariadb_dir / 'mysqld.sock'}", "-u", _me(),
                 "-N", "-e", sql], f"mariadb {sql[:40]!r}")


def _me() -> str:
    """Our system user: MariaDB lets it in over the socket as the account of the same name."""
    import getpass

    return getpass.getuser()


def _db_owner() -> str:
    """The system user MariaDB runs as: ``mysql`` when we are root (it refuses root), else ourselves."""
    return "mysql" if os.geteuid() == 0 else _me()


def mariadb_running(layout: TeamLayout) -> bool:
    """Whether the MariaDB server of this folder answers on its socket."""
    socket = layout.mariadb_dir / "mysqld.sock"
    if not socket.exists():
        return False
    ping = subprocess.run([_mariadb_program("mariadb-admin"), f"--socket={socket}", "-u", _me(), "ping"],
                          capture_output=True, text=True, timeout=30)
    return ping.returncode == 0


def start_mariadb(layout: TeamLayout, timeout_s: float = 60) -> str:
    """Initialises MariaDB once in the team folder, starts it on loopback, creates the ``zenml`` database.

    Returns:
        The ZenML server's store URL (``mysql://zenml:PASSWORD@127.0.0.1:PORT/zenml``).

    Raises:
        TeamError: If MariaDB is not installed, or does not start in time (with its log's end).
    """
    folder = layout.mariadb_dir
    data = folder / "data"
    folder.mkdir(parents=True, exist_ok=True)
    owner = _db_owner()
    if os.geteuid() == 0:
        shutil.chown(folder, owner, owner)
    if not (data / "mysql").is_dir():
        _run([_mariadb_program("mariadb-install-db"), f"--datadir={data}", f"--user={owner}", "--skip-test-db",
              "--auth-root-authentication-method=socket", f"--auth-root-socket-user={_me()}"],
             "initialising MariaDB")
    password = _secret_file(folder / "password")
    if not mariadb_running(layout):
        log_path = folder / "mariadb.log"
        command = [_mariadb_program("mariadbd"), "--no-defaults", f"--datadir={data}", f"--user={owner}",
                   f"--socket={folder / 'mysqld.sock'}", f"--pid-file={folder / 'mariadbd.pid'}",
                   f"--port={layout.mariadb_port}", "--bind-address=127.0.0.1", f"--log-error={log_path}",
                   "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci"]
        from infra.processes import port_in_use

        if port_in_use("127.0.0.1", layout.mariadb_port):
            raise TeamError(f"port {layout.mariadb_port} is taken by something else; choose another (--mariadb-port)")
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not mariadb_running(layout):
            if time.monotonic() > deadline:
                tail = log_path.read_text()[-2000:] if log_path.is_file() else "(no log)"
                raise TeamError(f"MariaDB did not start in {timeout_s:.0f} s:\n{tail}")
            time.sleep(0.5)
    mariadb_sql(layout, "CREATE DATABASE IF NOT EXISTS zenml CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci; "
                         f"CREATE USER IF NOT EXISTS 'zenml'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                         "GRANT ALL PRIVILEGES ON zenml.* TO 'zenml'@'127.0.0.1'")
    return f"mysql://zenml:{password}@127.0.0.1:{layout.mariadb_port}/zenml"


def stop_mariadb(layout: TeamLayout) -> bool:
    """Stops the MariaDB server of this folder (a clean shutdown); returns whether one ran."""
    if not mariadb_running(layout):
        return False
    _run([_mariadb_program("mariadb-admin"), f"--socket={layout.mariadb_dir / 'mysqld.sock'}", "-u", _me(),
          "shutdown"], "stopping MariaDB")
    deadline = time.monotonic() + 30
    while (layout.mariadb_dir / "mariadbd.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return True


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


ZENML_USER = "creative-writer"
MLFLOW_SECRET = "cw_mlflow"  # the ZenML secret stack_configs/team.yaml's tracker reads its token from


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def mlflow_healthy(layout: TeamLayout) -> bool:
    """Whether the MLflow server answers its health check."""
    return _healthy(layout.tracking_uri)


def zenml_healthy(layout: TeamLayout) -> bool:
    """Whether the ZenML server answers its health check."""
    return _healthy(layout.zenml_url)


def _start_server(name: str, command: list[str], env: dict[str, str], pid_file: Path, port: int,
                  healthy: Callable[[], bool], timeout_s: float) -> int:
    """Starts one server in its own process group unless it runs; waits until ``healthy()``.

    Returns:
        Its pid.

    Raises:
        TeamError: If the port is taken, or the server exits or is not healthy in time (with its log's end).
    """
    running = _pid(pid_file)
    if running is not None and healthy():
        return running
    from infra.processes import port_in_use

    if port_in_use("127.0.0.1", port):
        raise TeamError(f"port {port} is taken by something else; choose another port for the {name} server")
    log_path = pid_file.with_suffix(".log")
    with log_path.open("a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                   cwd=pid_file.parent)
    pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise TeamError(f"the {name} server exited ({process.returncode}):\n{log_path.read_text()[-2000:]}")
        if healthy():
            return process.pid
        time.sleep(0.5)
    _stop_server(pid_file)
    raise TeamError(f"the {name} server was not healthy after {timeout_s:.0f} s:\n{log_path.read_text()[-2000:]}")


def _stop_server(pid_file: Path) -> bool:
    """Stops the server a pid file names (its whole process group); returns whether one ran."""
    import signal

    pid = _pid(pid_file)
    pid_file.unlink(missing_ok=True)
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


def start_mlflow(layout: TeamLayout, database_uri: str, timeout_s: float = 120) -> int:
    """Starts the MLflow server (tracking, registry, proxied artifacts) unless it runs; waits for health.

    Returns:
        Its pid.

    Raises:
        TeamError: If the port is taken, or it exits or is not healthy in time (with the end of its log).
    """
    artifacts = layout.root / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": database_uri}  # the password stays out of argv
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(layout.mlflow_port),
               "--serve-artifacts", "--artifacts-destination", artifacts.resolve().as_uri(), "--workers", "1"]
    return _start_server("MLflow", command, env, layout.mlflow_pid, layout.mlflow_port,
                         lambda: mlflow_healthy(layout), timeout_s)


def stop_mlflow(layout: TeamLayout) -> bool:
    """Stops the MLflow server this script started; returns whether one ran."""
    return _stop_server(layout.mlflow_pid)


def _secret_file(path: Path) -> str:
    """The secret in ``path``, written once (random, mode 0600) when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def start_zenml(layout: TeamLayout, store_url: str = "", timeout_s: float = 120) -> int:
    """Starts the ZenML server (REST API and dashboard) unless it runs; waits for health.

    Args:
        layout: Where it lives and listens.
        store_url: Its database (e.g. ``mysql://user:password@host/zenml``); SQLite in ``zenml/`` when empty.
        timeout_s: How long to wait for health.

    Returns:
        Its pid.

    Raises:
        TeamError: If the port is taken, or it exits or is not healthy in time (with the end of its log).
    """
    password = _secret_file(layout.zenml_password_file)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZENML_")},
           "ZENML_SERVER": "true", "ZENML_CONFIG_PATH": str(layout.zenml_dir / "server-config"),
           "ZENML_STORE_URL": store_url or f"sqlite:///{layout.zenml_dir.resolve()}/zenml.db",
           "ZENML_SERVER_AUTO_ACTIVATE": "true", "ZENML_DEFAULT_USER_NAME": ZENML_USER,
           "ZENML_DEFAULT_USER_PASSWORD": password, "ZENML_ANALYTICS_OPT_IN": "false",
           # one machine: the dashboard may show artifacts of the local artifact store
           "ZENML_SERVER_ALLOW_LOCAL_FILE_ACCESS": "true"}
    command = [sys.executable, "-m", "uvicorn", "zenml.zen_server.zen_server_api:app", "--host", "127.0.0.1",
               "--port", str(layout.zenml_port), "--log-level", "warning"]
    return _start_server("ZenML", command, env, layout.zenml_pid, layout.zenml_port,
                         lambda: zenml_healthy(layout), timeout_s)


def client_environment(layout: TeamLayout) -> dict[str, str]:
    """The environment a ZenML/MLflow client uses to work on these servers (``run.py --stack team``).

    The team's ZenML client keeps its own configuration and repository under ``zenml/``, so the local
    stack's state (``.zen``, the global ZenML config) is never touched by team runs.
    """
    return {"ZENML_STORE_URL": layout.zenml_url, "ZENML_STORE_USERNAME": ZENML_USER,
            "ZENML_STORE_PASSWORD": _secret_file(layout.zenml_password_file),
            "ZENML_CONFIG_PATH": str(layout.zenml_dir / "client-config"),
            "ZENML_REPOSITORY_PATH": str(layout.zenml_dir / "repository"),
            "ZENML_CUSTOM_SOURCE_ROOT": str(PROJECT_ROOT),
            "MLFLOW_TRACKING_URI": layout.tracking_uri, "CW_TEAM_DIR": str(layout.root.resolve())}


def select_stack(stack: str, team_root: Path) -> Path | None:
    """For ``--stack team``: points this process at the team servers; returns the team's ZenML repository.

    ``--stack local`` changes nothing and returns None (the project root is the repository). Call it
    before ZenML is imported.

    Raises:
        TeamError: If the team servers cannot be found (see :func:`use_team_environment`).
    """
    if stack != "team":
        return None
    use_team_environment(team_root)
    return Path(os.environ["ZENML_REPOSITORY_PATH"])


def connection_file(root: Path) -> Path:
    """Where ``up`` records the ports it started the servers on (read by ``run.py --stack team``)."""
    return root / "connection.json"


def use_team_environment(root: Path = TeamLayout.root) -> dict[str, str]:
    """Points this process at the team servers: sets what the environment does not set already.

    With ``ZENML_STORE_URL`` and ``MLFLOW_TRACKING_URI`` in the environment (servers elsewhere), only the
    team client's own folders are filled in; otherwise the servers ``up`` started under ``root`` are used.
    Must run before ZenML is imported.

    Returns:
        The variables it set.

    Raises:
        TeamError: If neither the environment nor ``root`` says where the servers are.
    """
    root = root.resolve()
    if os.environ.get("ZENML_STORE_URL") and os.environ.get("MLFLOW_TRACKING_URI"):
        wanted = {"ZENML_CONFIG_PATH": str(root / "zenml" / "client-config"),
                  "ZENML_REPOSITORY_PATH": str(root / "zenml" / "repository"),
                  "ZENML_CUSTOM_SOURCE_ROOT": str(PROJECT_ROOT), "CW_TEAM_DIR": str(root)}
    else:
        recorded = connection_file(root)
        if not recorded.is_file():
            raise TeamError(f"no team services found in {root}: start them with `python -m infra.team up` "
                            "(or set ZENML_STORE_URL, ZENML_STORE_USERNAME/ZENML_STORE_PASSWORD and "
                            "MLFLOW_TRACKING_URI for servers elsewhere)")
        ports = json.loads(recorded.read_text())
        layout = TeamLayout(root, int(ports["pg_port"]), int(ports["mlflow_port"]), int(ports["zenml_port"]))
        if not (mlflow_healthy(layout) and zenml_healthy(layout)):
            raise TeamError(f"the team services in {root} are not running (MLflow {layout.tracking_uri}, ZenML "
                            f"{layout.zenml_url}): start them with `python -m infra.team up`")
        wanted = client_environment(layout)
    changed = {name: value for name, value in wanted.items() if not os.environ.get(name)}
    os.environ.update(changed)
    Path(os.environ["ZENML_REPOSITORY_PATH"]).mkdir(parents=True, exist_ok=True)
    return changed


def register_mlflow_secret(layout: TeamLayout) -> bool:
    """Creates the ZenML secret ``cw_mlflow`` on the ZenML server unless it exists; returns whether it did.

    Our MLflow server has no authentication, so its token is random (ZenML's tracker insists on one for
    an ``http`` URI). Runs the ZenML CLI as a client of the server, with the secret in a 0600 file.
    """
    env = {**os.environ, **client_environment(layout), "ZENML_ANALYTICS_OPT_IN": "false"}
    zenml = [sys.executable, "-c", "from zenml.cli import cli; cli()"]
    found = subprocess.run([*zenml, "secret", "get", MLFLOW_SECRET], capture_output=True, text=True, env=env,
                           timeout=120, cwd=PROJECT_ROOT)
    if found.returncode == 0:
        return False
    values = layout.zenml_dir / "mlflow-secret.json"
    values.write_text(json.dumps({"token": secrets.token_urlsafe(24)}))
    values.chmod(0o600)
    try:
        _run([*zenml, "secret", "create", MLFLOW_SECRET, f"--values=@{values}"],
             "registering the cw_mlflow secret", env=env)
    finally:
        values.unlink(missing_ok=True)
    return True


def up(layout: TeamLayout, zenml_store_url: str = "", mariadb: bool = False) -> dict[str, str]:
    """Starts PostgreSQL, the MLflow server and the ZenML server (idempotent); returns how to reach them.

    Args:
        layout: Where the services live and listen.
        zenml_store_url: The ZenML server's database; empty: SQLite in the folder, or MariaDB (below).
        mariadb: Start MariaDB in the folder for the ZenML server; a folder that has a MariaDB keeps
            using it.
    """
    database_uri = start_postgres(layout)
    start_mlflow(layout, database_uri)
    if not zenml_store_url and (mariadb or (layout.mariadb_dir / "data" / "mysql").is_dir()):
        zenml_store_url = start_mariadb(layout)
    start_zenml(layout, zenml_store_url)
    register_mlflow_secret(layout)
    connection_file(layout.root).write_text(json.dumps(
        {"pg_port": layout.pg_port, "mlflow_port": layout.mlflow_port, "zenml_port": layout.zenml_port}))
    return {"tracking_uri": layout.tracking_uri, "zenml_url": layout.zenml_url,
            "postgres": f"127.0.0.1:{layout.pg_port}/{DB_NAME}", "artifacts": str(layout.root / "artifacts")}


def down(layout: TeamLayout) -> list[str]:
    """Stops what :func:`up` started; returns what was stopped."""
    stopped = []
    if _stop_server(layout.zenml_pid):
        stopped.append("zenml")
    if stop_mlflow(layout):
        stopped.append("mlflow")
    if postgres_running(layout):
        _run(_as_db_user([pg_bin("pg_ctl"), "-D", str(layout.pg_data), "-m", "fast", "-w", "stop"]),
             "stopping PostgreSQL")
        stopped.append("postgres")
    if (layout.mariadb_dir / "data").is_dir() and stop_mariadb(layout):
        stopped.append("mariadb")
    return stopped


def status(layout: TeamLayout) -> dict[str, object]:
    """What runs: PostgreSQL, the MLflow and ZenML servers (pid and health) and the layout."""
    return {"postgres": postgres_running(layout), "mlflow_pid": _pid(layout.mlflow_pid),
            "mlflow_healthy": mlflow_healthy(layout), "zenml_pid": _pid(layout.zenml_pid),
            "zenml_healthy": zenml_healthy(layout),
            "mariadb": (layout.mariadb_dir / "data").is_dir() and mariadb_running(layout),
            **{k: str(v) for k, v in asdict(layout).items()}}


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.team up|down|status``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--root", type=Path, default=TeamLayout.root, help="the folder the services live in")
    parser.add_argument("--pg-port", type=int, default=TeamLayout.pg_port)
    parser.add_argument("--mlflow-port", type=int, default=TeamLayout.mlflow_port)
    parser.add_argument("--zenml-port", type=int, default=TeamLayout.zenml_port)
    parser.add_argument("--mariadb-port", type=int, default=TeamLayout.mariadb_port)
    parser.add_argument("--mariadb", action="store_true",
                        help="up: run the ZenML server on MariaDB started in the team folder (kept once created)")
    parser.add_argument("--zenml-store-url", default=os.environ.get("CW_TEAM_ZENML_STORE_URL", ""),
                        help="the ZenML server's database (e.g. mysql://user:password@127.0.0.1/zenml for "
                             "MariaDB; default: SQLite in the team folder); also $CW_TEAM_ZENML_STORE_URL")
    args = parser.parse_args(argv)
    layout = TeamLayout(args.root.resolve(), args.pg_port, args.mlflow_port, args.zenml_port, args.mariadb_port)
    try:
        if args.action == "up":
            started = time.perf_counter()
            where = up(layout, args.zenml_store_url, args.mariadb)
            print(f"team services up in {time.perf_counter() - started:.1f} s: MLflow {where['tracking_uri']} "
                  f"(PostgreSQL {where['postgres']}, artifacts in {where['artifacts']}), "
                  f"ZenML {where['zenml_url']} (user {ZENML_USER}, password in {layout.zenml_password_file})")
            root = "" if layout.root == TeamLayout.root else f" --team-root {layout.root}"
            print(f"use them: python run.py --stack team{root} --pipeline training")
            print(f"MLflow clients: export MLFLOW_TRACKING_URI={where['tracking_uri']}")
            print("stop them: python -m infra.team down" + (f" --root {layout.root}" if root else ""))
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
