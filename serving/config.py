"""The serving profile (``configs/serving.yaml``) and its environment overrides.

The YAML holds the defaults a deployment shares; the environment holds what differs per deployment:

========================  ===============================================================
``CW_SERVING_CONFIG``     another profile file
``CW_MODEL_ALIAS``        serve this registry alias (default ``champion``)
``CW_MODEL_VERSION``      pin a registry version instead of the alias
``CW_BENTO_MODEL``        load this BentoML model tag (set inside a Bento by the deployment)
``CW_BATCHING``           ``on`` / ``off``: adaptive batching of ``/generate``
``CW_HOST``, ``CW_PORT``  where ``python -m serving`` binds
``CW_API_TOKEN``          the bearer token (the variable's name is ``server.token_env``)
``CW_DEPLOYMENT_ID``      set by the deployment for its server; ``GET /model`` reports it
``CW_DEPLOYMENT_ROOT``    set by the deployment: the checkout whose deployment this process is
========================  ===============================================================
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from core.paths import PROJECT_ROOT, REGISTERED_NAME
from core.yaml_files import read_mapping

DEFAULT_PROFILE = PROJECT_ROOT / "configs" / "serving.yaml"
DEPLOYMENT_ID_ENV = "CW_DEPLOYMENT_ID"  # which deployment started this server (its processes inherit it)
DEPLOYMENT_ROOT_ENV = "CW_DEPLOYMENT_ROOT"  # whose deployment it is: the checkout that started it
# glibc gives each thread that allocates its own malloc arena (up to 8 per core); the server's request
# threads then grow its memory for minutes under load (soak: +117 MiB in 60 s; with 2 arenas +41 MiB).
# Read when a process starts, so the launchers set it (unless the environment already does).
PROCESS_ENV = {"MALLOC_ARENA_MAX": "2"}


class ServingConfigError(ValueError):
    """The serving profile is missing or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ModelSource:
    """Which model is served.

    Attributes:
        registered_name: The MLflow registered model.
        alias: The registry alias served when no version is pinned.
        version: A pinned registry version (empty: follow the alias).
        bento_model: A BentoML model-store tag; when set it is loaded instead of asking the registry.
        retry_s: With no model yet, how often readiness checks look again (seconds).
    """

    registered_name: str = REGISTERED_NAME
    alias: str = "champion"
    version: str = ""
    bento_model: str = ""
    retry_s: float = 30.0

    def describe(self) -> str:
        """Where the model comes from, in words."""
        if self.bento_model:
            return f"BentoML model '{self.bento_model}'"
        if self.version:
            return f"models:/{self.registered_name}/{self.version}"
        return f"models:/{self.registered_name}@{self.alias}"


@dataclass(frozen=True)
class ServerSettings:
    """Where and how the HTTP server listens, and how many torch threads its model uses.

    ``torch_threads`` 0 means every core; ``$CW_TORCH_THREADS`` wins (see :mod:`models.threads`).
    """

    host: str = "127.0.0.1"
    port: int = 3000
    token_env: str = "CW_API_TOKEN"
    timeout_s: int = 120
    torch_threads: int = 0


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for."""

    max_prompt_chars: int = 1000
    max_body_bytes: int = 65536
    max_new_tokens: int = 512
    max_drafts: int = 4
    reject_emoji: bool = True


@dataclass(frozen=True)
class Batching:
    """Adaptive batching of ``/generate`` drafts (see :mod:`serving.batching`)."""

    enabled: bool = True
    max_batch_size: int = 16
    max_latency_ms: float = 15.0


@dataclass(frozen=True)
class Defaults:
    """Generation settings a request may leave out."""

    max_new_tokens: int = 128
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    min_p: float = 0.0


@dataclass(frozen=True)
class UiSettings:
    """The Gradio page's example prompts: ``[prompt, form, genre]`` rows."""

    examples: tuple[tuple[str, str, str], ...] = (
        ("A lighthouse keeper finds a message in a bottle written in her own handwriting.", "story", "mystery"),
        ("A tortoise who wants to fly asks the eagle for lessons.", "fable", ""),
        ("A colony ship wakes its crew a hundred years too early.", "story", "science fiction"),
        ("The last dragon in the mountains at the end of winter.", "poem", "fantasy"),
    )


@dataclass(frozen=True)
class ServingConfig:
    """The whole serving profile."""

    model: ModelSource = field(default_factory=ModelSource)
    server: ServerSettings = field(default_factory=ServerSettings)
    limits: Limits = field(default_factory=Limits)
    batching: Batching = field(default_factory=Batching)
    defaults: Defaults = field(default_factory=Defaults)
    ui: UiSettings = field(default_factory=UiSettings)

    @property
    def token(self) -> str:
        """The bearer token from the environment ('' when the API is open)."""
        return os.environ.get(self.server.token_env, "").strip()

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain data (the token is never included)."""
        return asdict(self)


_SECTIONS = {f.name: f.type for f in fields(ServingConfig)}
_CLASSES = {"model": ModelSource, "server": ServerSettings, "limits": Limits, "batching": Batching,
            "defaults": Defaults, "ui": UiSettings}


def _section(cls: Any, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ServingConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ServingConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    values = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int | float):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            value = type(default)(value) if ok else value
        elif isinstance(default, tuple):
            ok = isinstance(value, list) and all(isinstance(r, list) and len(r) == 3 for r in value)
            value = tuple(tuple(str(x or "") for x in r) for r in value) if ok else value
        else:
            ok = isinstance(value, str) or value is None
            value = "" if value is None else value
        if not ok:
            raise ServingConfigError(f"{where}.{name}: invalid value {value!r} (expected like {default!r})")
        values[name] = value
    return cls(**values)


def _env_overrides(config: ServingConfig, env: dict[str, str]) -> ServingConfig:
    from dataclasses import replace

    model, server, batching = config.model, config.server, config.batching
    if env.get("CW_MODEL_ALIAS"):
        model = replace(model, alias=env["CW_MODEL_ALIAS"], version="")
    if env.get("CW_MODEL_VERSION"):
        model = replace(model, version=env["CW_MODEL_VERSION"])
    if env.get("CW_BENTO_MODEL"):
        model = replace(model, bento_model=env["CW_BENTO_MODEL"])
    if env.get("CW_HOST"):
        server = replace(server, host=env["CW_HOST"])
    if env.get("CW_PORT"):
        if not env["CW_PORT"].isdigit():
            raise ServingConfigError(f"CW_PORT must be a port number, got {env['CW_PORT']!r}")
        server = replace(server, port=int(env["CW_PORT"]))
    if env.get("CW_BATCHING"):
        flag = env["CW_BATCHING"].strip().lower()
        if flag not in {"on", "off", "true", "false", "1", "0"}:
            raise ServingConfigError(f"CW_BATCHING must be on or off, got {env['CW_BATCHING']!r}")
        batching = replace(batching, enabled=flag in {"on", "true", "1"})
    return replace(config, model=model, server=server, batching=batching)


def bento_envs(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The environment a Bento was built with, when this code runs from inside one (else empty).

    A Bento keeps the code in ``src/`` beside its ``bento.yaml``; ``bentoml serve <bento>`` run locally does
    not apply the Bento's ``envs``, so the service reads them here (the real environment still wins).
    """
    manifest = root.parent / "bento.yaml"
    if root.name != "src" or not manifest.is_file():
        return {}
    data = yaml.safe_load(manifest.read_text()) or {}
    return {str(e["name"]): str(e.get("value", "")) for e in data.get("envs") or [] if isinstance(e, dict)}


def load_serving_config(path: Path | None = None, env: dict[str, str] | None = None) -> ServingConfig:
    """Reads the serving profile and applies the environment overrides.

    Args:
        path: The YAML file (default: ``$CW_SERVING_CONFIG`` or ``configs/serving.yaml``; an installed
            package without that file uses the built-in defaults, which the file restates).
        env: The environment to read overrides from (default: ``os.environ``).

    Raises:
        ServingConfigError: If the file is missing or not YAML, or a key or value is wrong (named).
    """
    env = {**bento_envs(), **os.environ} if env is None else env
    named = path or env.get("CW_SERVING_CONFIG")
    path = Path(named or DEFAULT_PROFILE)
    if not named and not path.exists():  # installed without the checkout's configs/: the built-in defaults
        data: dict[str, Any] = {}
    else:
        data = read_mapping(path, ServingConfigError, "serving config")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ServingConfigError(f"{path}: unknown section(s) {unknown}; allowed: {sorted(_SECTIONS)}")
    config = ServingConfig(**{name: _section(cls, data.get(name), f"{path}: {name}") for name, cls in _CLASSES.items()})
    if config.defaults.max_new_tokens > config.limits.max_new_tokens:
        raise ServingConfigError(f"{path}: defaults.max_new_tokens {config.defaults.max_new_tokens} exceeds "
                                 f"limits.max_new_tokens {config.limits.max_new_tokens}")
    return _env_overrides(config, env)
