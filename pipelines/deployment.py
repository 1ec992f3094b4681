"""The deployment pipeline: the registry's champion as a Bento, served by the stack's BentoML deployer."""

from __future__ import annotations

from zenml import pipeline

from core.paths import REGISTERED_NAME
from steps import build_bento, deploy_bento


@pipeline(name="deployment_pipeline", enable_cache=False)
def deployment_pipeline(model_version: str, alias: str = "champion", registered_name: str = REGISTERED_NAME,
                        host: str = "127.0.0.1", port: int = 3000, timeout: int = 180, challenger_version: str = "",
                        challenger_share: float = 0.0) -> None:
    """build_bento → deploy_bento.

    ``run.py --pipeline deployment`` resolves ``@champion`` to a version, the Bento packs that version
    with the service and the UI, and the deployer replaces whatever this pipeline deployed before.

    Args:
        model_version: The registry version to deploy.
        alias: The alias it was resolved through.
        registered_name: The MLflow registered model.
        host: Interface to bind.
        port: Port to bind.
        timeout: Seconds to wait for the server to be ready.
        challenger_version: The ``@challenger`` version (``run.py`` resolves it when ``challenger_share`` > 0).
        challenger_share: The share of stories the challenger writes (0: the champion writes every one).
    """
    bento = build_bento(model_version=model_version, alias=alias, registered_name=registered_name,
                        challenger_version=challenger_version, challenger_share=challenger_share)
    deploy_bento(bento=bento, host=host, port=port, timeout=timeout)
