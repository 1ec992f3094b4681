"""Local BentoML deployments through the stack's ZenML BentoML model deployer, working with BentoML 1.4.

ZenML 0.98's stock local BentoML service takes BentoML's legacy start-up path for a 1.4 class service
(its daemon crashes with ``'Service' object has no attribute 'runners'`` while the step reports success),
and its deploy step keeps serving the old Bento on a redeploy. :class:`CreativeWriterDeployment` is the
stock service with a ``run()`` that starts BentoML's current HTTP server for the Bento; :func:`deploy`
stops the previous deployment of this pipeline step gracefully, registers the new one with ZenML (so
``zenml model-deployer models list`` shows it), starts it and raises unless it answers ``/readyz``.
ZenML stores this class's import path and the daemon imports it, so it lives in the repository.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from zenml.integrations.bentoml.services.bentoml_local_deployment import (
    BentoMLLocalDeploymentConfig,
    BentoMLLocalDeploymentService,
)

from infra.stack import PROJECT_ROOT

log = logging.getLogger(__name__)

PIPELINE = "deployment_pipeline"
STEP = "deploy_bento"


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


def deploy(model_deployer: Any, bento_tag: str, model_uri: str, host: str, port: int, timeout: int = 120,
           apis: list[str] | None = None) -> CreativeWriterDeployment:
    """Replaces this step's deployment with one serving ``bento_tag`` and waits until it is ready.

    Args:
        model_deployer: The stack's BentoML model deployer.
        bento_tag: The Bento to serve.
        model_uri: The registry URI it serves (``models:/creative-writer/3``).
        host: Interface to bind (127.0.0.1 unless you mean to expose it).
        port: Port to bind.
        timeout: Seconds to wait for the server to come up.
        apis: The service's API names (shown by ZenML).

    Raises:
        RuntimeError: If the server does not become ready (the daemon's log tail is in the message).
    """
    from zenml.client import Client

    for old in existing(model_deployer):  # graceful: a forced stop leaves BentoML's worker holding the port
        log.info("stopping the previous deployment %s (%s)", old.uuid, old.config.bento_tag)
        model_deployer.delete_model_server(old.uuid, timeout=60, force=False)
    config = BentoMLLocalDeploymentConfig(
        model_name="creative-writer", model_uri=model_uri, bento_tag=bento_tag, apis=apis or [],
        host=host, port=port, working_dir=str(PROJECT_ROOT), pipeline_name=PIPELINE, pipeline_step_name=STEP,
        service_name=f"creative-writer-{port}")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    client = Client()
    record = client.create_service(config=config, service_type=CreativeWriterDeployment.SERVICE_TYPE)
    config.root_runtime_path = model_deployer.local_path
    service = CreativeWriterDeployment(uuid=record.id, config=config)
    try:
        service.start(timeout=0)
        wait_until_ready(service, f"http://{host}:{port}/readyz", timeout)
    except Exception:
        service.stop(timeout=30, force=False)
        client.delete_service(record.id)
        raise
    client.update_service(id=service.uuid, name=service.config.service_name,
                          service_source=service.model_dump().get("type"), admin_state=service.admin_state,
                          status=service.status.model_dump(), endpoint=service.endpoint.model_dump(),
                          prediction_url=service.get_prediction_url(), health_check_url=service.get_healthcheck_url())
    return service


def wait_until_ready(service: CreativeWriterDeployment, readyz: str, timeout: float) -> None:
    """Polls ``readyz`` until 200; fails at once when the daemon dies, with the end of its log.

    Raises:
        RuntimeError: If the daemon exits or the server is not ready in ``timeout`` seconds.
    """
    import time

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


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.bento_deployment {list,stop}``: this project's deployments, or stop them gracefully.

    ``zenml model-deployer models delete`` kills the daemon with SIGKILL and leaves BentoML's worker
    holding the port; ``stop`` asks it to shut down and waits.
    """
    import argparse

    from zenml.client import Client

    parser = argparse.ArgumentParser(description="List or stop the creative-writer deployments.")
    parser.add_argument("action", choices=("list", "stop"))
    args = parser.parse_args(argv)
    deployer = Client().active_stack.model_deployer
    if deployer is None:
        print("the active ZenML stack has no model deployer (run `python run.py` once to set the stack up)")
        return 1
    services = existing(deployer)
    if not services:
        print("no creative-writer deployment")
    for service in services:
        where = f"http://{service.config.host}:{service.config.port}"
        if args.action == "stop":
            deployer.delete_model_server(service.uuid, timeout=60, force=False)
            print(f"stopped {service.uuid} ({service.config.bento_tag} at {where})")
        else:
            state = "running" if service.is_running else "stopped"
            print(f"{service.uuid}  {state}  {service.config.bento_tag}  {service.config.model_uri}  {where}/ui/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
