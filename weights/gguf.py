"""GGUF files: their metadata, their hash, and their conversion to a ``save_pretrained`` checkpoint (fp32)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from weights.spec import INFO, SOURCE_GGUF, CheckpointError, parse_spec

log = logging.getLogger(__name__)


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
    """Dequantizes a GGUF checkpoint to fp32 and writes it to ``out`` (model, tokenizer, ``checkpoint.json``, source).

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
    shutil.copyfile(source, out / SOURCE_GGUF)  # the llama.cpp export copies its untouched tensors from it
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
