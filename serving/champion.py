"""Finding and loading the model to serve, with its provenance.

Two sources, one result (:class:`LoadedModel`):

- the **MLflow registry** (development, ``bentoml serve`` from the checkout): the version behind
  ``models:/creative-writer@champion`` (or a pinned version), its family, run ids and evaluation metrics
  from the version's tags;
- the **BentoML model store** (inside a Bento built by the deployment pipeline): the model imported
  from the registry with :func:`import_to_bentoml`, whose metadata carries the same provenance.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.paths import REGISTERED_NAME
from models.families import load_model, runtime_of
from registry.tags import tagged_metrics
from serving.config import ModelSource

log = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    """There is nothing to serve yet (no registered model, alias or version); the message says what to do."""


@dataclass(frozen=True)
class Provenance:
    """What is being served and where it came from.

    Attributes:
        family: The model family (seq2seq, transformer, gan).
        registered_name: The MLflow registered model.
        version: Its registry version.
        alias: The alias it was resolved through ('' when pinned by version).
        mlflow_run_id: The MLflow run that logged the served model.
        training_run_id: The ZenML pipeline run that trained and evaluated it.
        source: The URI or tag it was loaded from.
        metrics: Evaluation metrics recorded on the registry version (per-word perplexity, ...).
        base_model: The pretrained base's checkpoint spec ('' for a model trained from scratch).
        base_license: The base's licence, as its source declares it.
        base_attribution: Who made the base.
        runtime: What runs the model (``llama.cpp`` or ``torch``).
        served_file: The weights file served with its SHA-256 (``gguf/model.gguf sha256:…``; '' on torch).
    """

    family: str
    registered_name: str
    version: str
    alias: str
    mlflow_run_id: str
    training_run_id: str
    source: str
    metrics: dict[str, float] = field(default_factory=dict)
    base_model: str = ""
    base_license: str = ""
    base_attribution: str = ""
    runtime: str = "torch"
    served_file: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON)."""
        return asdict(self)

    def short(self) -> str:
        """One line for people: ``gan · creative-writer v3 @champion · run 1a2b3c4d``."""
        at = f" @{self.alias}" if self.alias else ""
        run = f" · run {self.training_run_id[:8]}" if self.training_run_id else ""
        name = Path(self.base_model.rsplit("#", 1)[-1]).name
        base = f" · base {name} ({self.base_license or 'licence not stated'})" if self.base_model else ""
        return f"{self.family} · {self.registered_name} v{self.version}{at}{run}{base} · {self.runtime}"


@dataclass
class LoadedModel:
    """A model ready to generate, its provenance, when it was loaded and the forms and genres it knows.

    ``controls`` and ``vocab_size`` are read from the model once here rather than on every request.
    """

    model: Any
    provenance: Provenance
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    controls: dict[str, list[str]] = field(init=False)
    vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        """Reads the model's form and genre control values and its vocabulary size (0: unknown)."""
        self.controls = self.model.controls()
        self.vocab_size = int(getattr(self.model, "vocab_size", 0) or 0)


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` when set (and not empty), else the project's SQLite store."""
    from core.paths import tracking_uri as project_uri

    return os.environ.get("MLFLOW_TRACKING_URI") or project_uri()


def resolve_registry(source: ModelSource) -> Provenance:
    """The registry version ``source`` points at, as provenance (no model is loaded).

    Raises:
        NoModelError: If the registered model, the alias or the version does not exist.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    hint = "train one with `python run.py --pipeline training`"
    try:
        client.get_registered_model(source.registered_name)
    except MlflowException:
        raise NoModelError(f"no registered model '{source.registered_name}' in the registry at {uri}; {hint}") from None
    try:
        if source.version:
            mv = client.get_model_version(source.registered_name, source.version)
        else:
            mv = client.get_model_version_by_alias(source.registered_name, source.alias)
    except MlflowException:
        what = f"version {source.version}" if source.version else f"alias '{source.alias}'"
        raise NoModelError(f"'{source.registered_name}' has no {what} in the registry at {uri}; {hint}, "
                           "or pin an existing version with CW_MODEL_VERSION") from None
    tags = dict(mv.tags or {})
    return Provenance(family=tags.get("family", ""), registered_name=source.registered_name, version=str(mv.version),
                      alias="" if source.version else source.alias, mlflow_run_id=mv.run_id or "",
                      training_run_id=tags.get("zenml_run_id", ""),
                      source=f"models:/{source.registered_name}/{mv.version}", metrics=tagged_metrics(tags))


def load(source: ModelSource, threads: int = 0) -> LoadedModel:
    """Resolves and loads the model to serve, on the runtime ``source`` names.

    Args:
        source: Which model, and on which runtime.
        threads: The llama.cpp runtime's threads (0: the thread policy's default, see :mod:`core.threads`).

    Raises:
        NoModelError: If there is nothing to serve (the message says why and what to do).
        models.llama_cpp.RuntimeLoadError: If the model's GGUF export is missing, damaged or not its own.
    """
    start = time.perf_counter()
    if source.bento_model:
        model, provenance = _load_bento(source.bento_model, source.runtime, threads, source.context)
    else:
        import tempfile

        import mlflow

        provenance = resolve_registry(source)
        with tempfile.TemporaryDirectory(prefix="cw-serving-") as folder:
            local = mlflow.artifacts.download_artifacts(artifact_uri=provenance.source, dst_path=folder)
            model = load_model(saved_model_dir(Path(local)), source.runtime, threads, source.context)
    provenance = Provenance(**{**provenance.as_dict(), "runtime": runtime_of(model), "served_file": " ".join(
        f"{name} sha256:{digest[:12]}" for name, digest in getattr(model, "served_files", {}).items())})
    if not provenance.family:
        provenance = Provenance(**{**provenance.as_dict(), "family": model.family})
    base = (getattr(model, "metadata", None) or {}).get("base") or {}
    if base:  # the saved model's own manifest names its base, whatever the registry tags say
        provenance = Provenance(**{**provenance.as_dict(), "base_model": str(base.get("spec", "")),
                                   "base_license": str(base.get("license", "")),
                                   "base_attribution": str(base.get("attribution", ""))})
    loaded = LoadedModel(model=model, provenance=provenance, load_seconds=time.perf_counter() - start)
    log.info("serving %s (loaded in %.1f s)", provenance.short(), loaded.load_seconds)
    return loaded


def _load_bento(tag: str, runtime: str = "torch", threads: int = 0, context: int = 0) -> tuple[Any, Provenance]:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        stored = bentoml.models.get(tag)
    except NotFound:
        raise NoModelError(f"BentoML model '{tag}' is not in the model store; "
                           "run `python run.py --pipeline deployment` to import the champion") from None
    data = dict(stored.info.metadata.get("provenance") or {})
    provenance = Provenance(**{**{k: "" for k in ("family", "registered_name", "version", "alias", "mlflow_run_id",
                                                   "training_run_id")}, **data, "source": str(stored.tag)})
    model = load_model(saved_model_dir(Path(stored.path_of("mlflow_model"))), runtime, threads, context)
    return model, provenance


def saved_model_dir(mlflow_model: Path) -> Path:
    """The saved model directory inside a logged MLflow pyfunc (see :func:`registry.mlflow_model.saved_model_dir`).

    Raises:
        NoModelError: If the MLflow model has no ``model_dir`` artifact.
    """
    from registry.mlflow_model import saved_model_dir as model_dir_of

    try:
        return model_dir_of(mlflow_model)
    except ValueError as exc:
        raise NoModelError(str(exc)) from None


def import_to_bentoml(source: ModelSource, bento_model_name: str = REGISTERED_NAME,
                      alias: str = "") -> tuple[str, Provenance]:
    """Copies the registry version ``source`` points at into the BentoML model store.

    The provenance travels in the BentoML model's metadata (and its registry version in the labels, which
    ZenML's BentoML deployer reads as ``model_uri``).

    Args:
        source: The registry model and version (or alias).
        bento_model_name: The BentoML model's name.
        alias: The alias the version was resolved through, recorded in the provenance.

    Returns:
        The BentoML model tag and the provenance.
    """
    import bentoml

    provenance = resolve_registry(source)
    if alias:  # resolved by alias before (run.py), imported by pinned version now
        provenance = Provenance(**{**provenance.as_dict(), "alias": alias})
    stored = bentoml.mlflow.import_model(
        bento_model_name, provenance.source,
        labels={"registered_name": provenance.registered_name, "version": provenance.version,
                "family": provenance.family},
        metadata={"provenance": {k: v for k, v in provenance.as_dict().items() if k != "source"}},
    )
    return str(stored.tag), provenance
