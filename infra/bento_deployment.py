"""Local BentoML deployments through the stack's ZenML BentoML model deployer, working with BentoML 1.4.

ZenML 0.98's stock local BentoML service takes BentoML's legacy start-up path for a 1.4 class service
(its daemon crashes with ``'Service' object has no attribute 'runners'`` while the step reports success),
and its deploy step keeps serving the old Bento on a redeploy. :class:`CreativeWriterDeployment` is the
stock service with a ``run()`` that starts BentoML's current HTTP server for the Bento.

:func:`deploy` replaces this project's deployment and checks what it serves:

- it stops the previous deployment gracefully, then any server process an earlier deployment of this
  checkout left behind (a BentoML worker outlives its supervisor when that is killed): such processes
  carry ``CW_DEPLOYMENT_ROOT`` = this checkout in their environment;
- it refuses, naming the process, when anything else holds the port;
- it registers the new deployment with ZenML (``zenml model-deployer models list`` shows it), starts it
  with ``CW_DEPLOYMENT_ID`` = its ZenML id, waits for ``/readyz`` and then checks that ``/model`` is
  answered by that deployment and serves the expected registry version and BentoML model.

ZenML stores this class's import path and the daemon imports it, so it lives in the repository.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zenml.integrations.bentoml.services.bentoml_local_deployment import (
    BentoMLLocalDeploymentConfig,
    BentoMLLocalDeploymentService,
)

from core.paths import REGISTERED_NAME
from infra.processes import ProcessInfo, listeners, marked, port_in_use, terminate, wait_port_free
from infra.stack import PROJECT_ROOT
from serving.config import DEPLOYMENT_ID_ENV, DEPLOYMENT_ROOT_ENV, PROCESS_ENV, load_serving_config
from workspace.db import DATABASE_ENV, database_url

log = logging.getLogger(__name__)

PIPELINE = "deployment_pipeline"
STEP = "deploy_bento"


class DeploymentError(RuntimeError):
    """A deployment that cannot start, or that does not serve what it should; the message says what to do."""


class CreativeWriterDeployment(BentoMLLocalDeploymentService):
    """ZenML's local BentoML service, started with BentoML 1.4's HTTP server."""

    def run(self) -> None:
        """Serves the Bento (blocking; this runs in the ZenML daemon process)."""
        from _bentoml_impl.server import serve_http
        from bentoml._internal.service.loader import load

        self.endpoint.prepare_for_start()
        log.info("serving Bento %s on %s:%s", self.config.bento_tag, self.config.host, self.config.port)
        load(bento_identifier=self.config.bento_tag).inject_config()  # as `bentoml serve` does
        try:
            serve_http(self.config.bento_tag, working_dir=None, host=self.config.host or "127.0.0.1",
                       port=self.config.port, backlog=self.config.backlog)
        except KeyboardInterrupt:
            log.info("stopping the creative-writer server")


def existing(model_deployer: Any) -> list[Any]:
    """This pipeline step's deployments known to ZenML (running or not)."""
    return model_deployer.find_model_server(pipeline_name=PIPELINE, pipeline_step_name=STEP,
                                            service_type=CreativeWriterDeployment.SERVICE_TYPE)


def owner(root: Path = PROJECT_ROOT) -> str:
    """Whose deployments a process serves: the checkout, and the ZenML server when not the local stack.

    The team stack's deployments are the team server's to manage, so the local stack's ``list``/``stop``
    leaves them alone (and the other way round).
    """
    server = os.environ.get("ZENML_STORE_URL", "")
    return f"{root} (stack at {server})" if server.startswith(("http://", "https://")) else str(root)


def leftovers(root: Path = PROJECT_ROOT) -> list[ProcessInfo]:
    """Server processes started by deployments of the checkout at ``root`` on this stack (daemons, workers)."""
    return marked(DEPLOYMENT_ROOT_ENV, owner(root))


def check_port(host: str, port: int, root: Path = PROJECT_ROOT) -> None:
    """Refuses a port held by anything but a deployment of this checkout (which a deployment replaces).

    Raises:
        DeploymentError: Naming the process that holds the port and how to free it.
    """
    if not port_in_use(host, port):
        return
    holders = listeners(port, DEPLOYMENT_ROOT_ENV)
    other = "or deploy on another port (--port N)"
    if not holders:
        raise DeploymentError(f"port {port} on {host} is in use by a process this user cannot see; free it {other}")
    for holder in holders:
        if holder.marker == owner(root):
            continue
        if holder.marker:
            raise DeploymentError(f"port {port} is held by {holder.describe()}, a creative-writer deployment of "
                                  f"{holder.marker}; stop it there with `python -m infra.bento_deployment stop"
                                  f"{' --stack team' if '(stack at' in holder.marker else ''}` {other}")
        raise DeploymentError(f"port {port} is held by {holder.describe()}, which is not a deployment of this "
                              f"project; stop it (kill {holder.pid}) {other}")


def stop_leftovers(root: Path = PROJECT_ROOT, timeout: float = 15.0) -> list[ProcessInfo]:
    """Stops the server processes earlier deployments of ``root`` left running (SIGTERM, then SIGKILL)."""
    stopped = terminate(leftovers(root), timeout=timeout)
    for process in stopped:
        log.warning("stopped %s, left running by an earlier deployment", process.describe())
    return stopped


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set while the daemon is started (it copies the environment)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def deploy(model_deployer: Any, bento_tag: str, model_uri: str, host: str, port: int, timeout: int = 120,
           apis: list[str] | None = None, model_tag: str = "") -> CreativeWriterDeployment:
    """Replaces this project's deployment with one serving ``bento_tag``, waits until ready and checks it.

    Args:
        model_deployer: The stack's BentoML model deployer.
        bento_tag: The Bento to serve.
        model_uri: The registry URI it serves (``models:/creative-writer/3``).
        host: Interface to bind (127.0.0.1 unless you mean to expose it).
        port: Port to bind.
        timeout: Seconds to wait for the server to come up.
        apis: The service's API names (shown by ZenML).
        model_tag: The BentoML model the Bento serves ('' skips that check).

    Raises:
        DeploymentError: If the port is held by another process, or the server that answers after the start
            is not the new one or serves another model.
        RuntimeError: If the server does not become ready (the daemon's log tail is in the message).
    """
    from zenml.client import Client

    for old in existing(model_deployer):  # graceful: a forced stop leaves BentoML's worker holding the port
        log.info("stopping the previous deployment %s (%s)", old.uuid, old.config.bento_tag)
        model_deployer.delete_model_server(old.uuid, timeout=60, force=False)
    stop_leftovers()
    check_port(host, port)
    if not wait_port_free(host, port, timeout=15):
        raise DeploymentError(f"port {port} on {host} is still in use after stopping this project's deployment; "
                              f"holders: {', '.join(p.describe() for p in listeners(port)) or 'not visible'}")
    config = BentoMLLocalDeploymentConfig(
        model_name=REGISTERED_NAME, model_uri=model_uri, bento_tag=bento_tag, apis=apis or [],
        host=host, port=port, working_dir=str(PROJECT_ROOT), pipeline_name=PIPELINE, pipeline_step_name=STEP,
        service_name=f"creative-writer-{port}")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    client = Client()
    record = client.create_service(config=config, service_type=CreativeWriterDeployment.SERVICE_TYPE)
    config.root_runtime_path = model_deployer.local_path
    service = CreativeWriterDeployment(uuid=record.id, config=config)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    try:
        markers = {DEPLOYMENT_ID_ENV: str(record.id), DEPLOYMENT_ROOT_ENV: owner()}
        process_env = {k: os.environ.get(k, v) for k, v in PROCESS_ENV.items()}  # the environment wins
        # the stories live in this checkout's database, not in the Bento's folder (replaced by a redeploy)
        process_env[DATABASE_ENV] = database_url(load_serving_config().workspace.database_url)
        with _environment({**process_env, **markers}):
            service.start(timeout=0)
        wait_until_ready(service, f"{url}/readyz", timeout)
        verify_serving(url, str(record.id), model_uri.rsplit("/", 1)[-1], model_tag)
    except Exception:
        service.stop(timeout=30, force=False)
        client.delete_service(record.id)
        stop_leftovers()
        raise
    client.update_service(id=service.uuid, name=service.config.service_name,
                          service_source=service.model_dump().get("type"), admin_state=service.admin_state,
                          status=service.status.model_dump(), endpoint=service.endpoint.model_dump(),
                          prediction_url=service.get_prediction_url(), health_check_url=service.get_healthcheck_url())
    return service


def verify_serving(url: str, deployment_id: str, version: str, model_tag: str = "") -> dict[str, Any]:
    """Checks that the server answering at ``url`` is deployment ``deployment_id`` serving ``version``.

    Args:
        url: The server's base address.
        deployment_id: The deployment that must answer (its ``/model`` reports ``deployment``).
        version: The registry version it must serve.
        model_tag: The BentoML model it must have loaded ('' skips this check).

    Returns:
        The ``/model`` document.

    Raises:
        DeploymentError: Saying who answered instead, or what it serves instead.
    """
    import httpx

    token = load_serving_config().token  # the variable the serving profile names (CW_API_TOKEN by default)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    info = httpx.get(f"{url}/model", headers=headers, timeout=30).raise_for_status().json()
    answered = info.get("deployment") or ""
    if answered != deployment_id:
        who = f"deployment {answered}" if answered else "a server not started by a deployment"
        raise DeploymentError(f"{url} is answered by {who}, not by the new deployment {deployment_id}: "
                              "another process serves this port")
    provenance = info.get("provenance") or {}
    if str(provenance.get("version")) != version or (model_tag and provenance.get("source") != model_tag):
        raise DeploymentError(f"{url} serves {provenance.get('registered_name')} v{provenance.get('version')} "
                              f"({provenance.get('source')}), not v{version} ({model_tag or 'any BentoML model'})")
    return info


def wait_until_ready(service: CreativeWriterDeployment, readyz: str, timeout: float) -> None:
    """Polls ``readyz`` until 200; fails at once when the daemon dies, with the end of its log.

    Raises:
        RuntimeError: If the daemon exits or the server is not ready in ``timeout`` seconds.
    """
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    deadline, started = time.monotonic() + timeout, time.monotonic()
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(readyz, timeout=3)
            if response.status_code == 200:
                return
            last = response.text.strip()
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > 5 and not service.status.pid:  # the daemon exited
            break
        time.sleep(1)
    logs = [line.rstrip() for line in service.get_logs(tail=400)]
    tail = "\n".join(line for line in logs if line.strip() and not line.startswith(("│", "╭", "╰")))[-2500:]
    raise RuntimeError(f"the BentoML server for {service.config.bento_tag} did not become ready at {readyz} "
                       f"({'last answer: ' + last if last else 'the daemon stopped'}); daemon log:\n{tail}")


def orphans(services: list[Any], root: Path = PROJECT_ROOT) -> list[ProcessInfo]:
    """Server processes of this checkout's deployments that no running deployment owns.

    E.g. a BentoML worker whose supervisor was killed: it keeps the port and serves on, unmanaged.
    """
    import psutil

    owned: set[int] = set()
    for service in services:
        pid = service.status.pid if service.is_running else None
        if pid:
            try:
                daemon = psutil.Process(pid)
                owned |= {daemon.pid, *(child.pid for child in daemon.children(recursive=True))}
            except psutil.NoSuchProcess:
                continue
    return [process for process in leftovers(root) if process.pid not in owned]


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.bento_deployment {list,stop}``: this project's deployments, or stop them gracefully.

    ``list`` also shows orphaned server processes (workers whose supervisor died); ``stop`` stops the
    deployments ZenML knows (gracefully: ``zenml model-deployer models delete`` kills the daemon with SIGKILL
    and leaves BentoML's worker holding the port), then any orphans.
    """
    import argparse

    from infra.team import TeamError, TeamLayout, select_stack

    parser = argparse.ArgumentParser(description="List or stop the creative-writer deployments.")
    parser.add_argument("action", choices=("list", "stop"))
    parser.add_argument("--stack", choices=("local", "team"), default="local",
                        help="whose deployments: the local stack's (default) or the team stack's")
    parser.add_argument("--team-root", type=Path, default=TeamLayout.root, help="--stack team: infra.team's folder")
    args = parser.parse_args(argv)
    try:
        select_stack(args.stack, args.team_root)
    except TeamError as exc:
        print(f"infra.bento_deployment: error: {exc}", file=sys.stderr)
        return 1
    from zenml.client import Client

    deployer = Client().active_stack.model_deployer
    if deployer is None:
        print("the active ZenML stack has no model deployer (run `python run.py` once to set the stack up)")
        return 1
    services = existing(deployer)
    left = orphans(services)
    own = {process.pid for process in leftovers()} - {process.pid for process in left}  # the deployments' own
    if not services and not left:
        print("no creative-writer deployment")
    for service in services:
        where = f"http://{service.config.host}:{service.config.port}"
        if args.action == "stop":
            deployer.delete_model_server(service.uuid, timeout=60, force=False)
            print(f"stopped {service.uuid} ({service.config.bento_tag} at {where})")
        else:
            state = "running" if service.is_running else "stopped"
            print(f"{service.uuid}  {state}  {service.config.bento_tag}  {service.config.model_uri}  {where}/ui/")
    if args.action == "stop":
        deadline = time.monotonic() + 10.0  # a stopped deployment's processes exit on their own, given a moment
        while own & {process.pid for process in leftovers()} and time.monotonic() < deadline:
            time.sleep(0.25)
        for process in terminate(leftovers(), timeout=15.0):
            what = "a server process that did not exit" if process.pid in own else "orphaned server process"
            print(f"stopped {what} {process.describe()}")
    else:
        for process in left:
            print(f"orphaned server process {process.describe()} (stop it with `python -m infra.bento_deployment "
                  "stop`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
