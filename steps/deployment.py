"""Steps of the deployment pipeline: package the champion as a Bento, deploy it with the stack's deployer."""

from __future__ import annotations

from typing import Annotated, Any

from zenml import step

from core.paths import REGISTERED_NAME


@step(enable_cache=False)
def build_bento(model_version: str, alias: str = "champion", registered_name: str = REGISTERED_NAME,
                challenger_version: str = "", challenger_share: float = 0.0) -> Annotated[dict[str, Any], "bento"]:
    """Imports a registry version (and the challenger, when one is served) and builds a Bento serving it.

    Args:
        model_version: The registry version (``run.py`` resolves the alias before the run).
        alias: The alias it was resolved through (provenance only).
        registered_name: The MLflow registered model.
        challenger_version: The ``@challenger`` version served beside it ('' for none).
        challenger_share: The share of stories the challenger writes.

    Returns:
        The Bento tag, the BentoML model tag, the registry URI and the provenance.
    """
    from infra.zenml_utils import log_step_metadata
    from serving.config import ModelSource
    from serving.deploy import build_bento as build

    challenger = ModelSource(registered_name=registered_name, version=challenger_version) \
        if challenger_version and challenger_share > 0 else None
    built = build(ModelSource(registered_name=registered_name, version=model_version), alias=alias,
                  challenger=challenger, challenger_share=challenger_share)
    data = built.as_dict()
    log_step_metadata({"bento_tag": built.bento_tag, "model_tag": built.model_tag, "model_uri": built.model_uri})
    return data


@step(enable_cache=False)
def deploy_bento(bento: dict[str, Any], host: str = "127.0.0.1", port: int = 3000,
                 timeout: int = 180) -> Annotated[dict[str, Any], "deployment"]:
    """Replaces the running deployment with the new Bento through the stack's BentoML model deployer.

    Args:
        bento: The ``build_bento`` output.
        host: Interface to bind (127.0.0.1 unless you mean to expose it; then set CW_API_TOKEN).
        port: Port to bind.
        timeout: Seconds to wait for the server to be ready.

    Returns:
        The addresses (API, OpenAPI docs, UI), the ZenML service id and what it serves.
    """
    from zenml.integrations.bentoml.model_deployers import BentoMLModelDeployer

    from infra.bento_deployment import deploy
    from infra.zenml_utils import log_step_metadata

    deployer = BentoMLModelDeployer.get_active_model_deployer()
    service = deploy(deployer, bento["bento_tag"], bento["model_uri"], host, port, timeout,
                     apis=["generate", "stream"], model_tag=bento["model_tag"])
    base = f"http://{host}:{port}"
    info = {"service_id": str(service.uuid), "url": base, "generate": f"{base}/generate", "stream": f"{base}/stream",
            "openapi": f"{base}/docs", "ui": f"{base}/ui/", "model": f"{base}/model", "metrics": f"{base}/metrics",
            "bento_tag": bento["bento_tag"], "model_uri": bento["model_uri"], "provenance": bento["provenance"]}
    log_step_metadata({k: v for k, v in info.items() if k != "provenance"})
    return info
