"""The family registry: which class loads a saved model directory (by its manifest's ``family``), on which runtime.

Every family runs on PyTorch. The Transformer family also runs on llama.cpp (:mod:`models.llama_cpp`)
when its saved directory holds a GGUF export (a Llama-architecture model saved since the llama.cpp
runtime exists); :func:`load_model` with ``runtime="llama.cpp"`` serves those on llama.cpp and everything
else on PyTorch, saying so in the log, so one setting covers a registry of mixed families.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.configs import RUNTIMES
from models.contract import WriterModel
from models.manifest import read_manifest

log = logging.getLogger(__name__)
FAMILIES: dict[str, str] = {
    "seq2seq": "models.seq2seq:Seq2SeqWriter",
    "transformer": "models.transformer:TransformerWriter",
    "gan": "models.gan:GanWriter",
}
FAST: dict[str, str] = {"transformer": "models.llama_cpp:LlamaCppWriter"}  # the families llama.cpp runs


def load_model(directory: Path, runtime: str = "torch", threads: int = 0, context: int = 0) -> WriterModel:
    """Loads any family's saved model directory (dispatching on the manifest's ``family``).

    Args:
        directory: A saved model directory.
        runtime: ``torch``, or ``llama.cpp`` for the families and exports it runs (others load on torch).
        threads: llama.cpp threads (0: the thread policy's default, see :mod:`core.threads`).
        context: The llama.cpp runtime's context in tokens (0: the one the model was trained with); a longer
            one lets a Continue read more of a manuscript, up to what the base was trained for.

    Raises:
        ValueError: For an unknown family or runtime.
        models.llama_cpp.RuntimeLoadError: If llama.cpp is asked for and the export is damaged or missing.
    """
    import importlib

    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
    manifest = read_manifest(directory)
    family = manifest["family"]
    if family not in FAMILIES:
        raise ValueError(f"{directory}: unknown model family '{family}' (known: {', '.join(FAMILIES)})")
    if runtime == "llama.cpp" and family in FAST:
        if manifest.get("gguf"):
            module, _, name = FAST[family].partition(":")
            return getattr(importlib.import_module(module), name).load(Path(directory), threads=threads,
                                                                       context=context)
        log.info("%s has no GGUF export: the torch runtime serves it", directory)
    module, _, name = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), name).load(Path(directory))


def runtime_of(model: WriterModel) -> str:
    """The runtime a loaded model runs on (``torch`` unless its class says otherwise)."""
    return str(getattr(model, "runtime", "torch"))
