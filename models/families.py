"""The family registry: which class loads a saved model directory (by its manifest's ``family``)."""

from __future__ import annotations

from pathlib import Path

from models.contract import WriterModel
from models.manifest import read_manifest

FAMILIES: dict[str, str] = {
    "seq2seq": "models.seq2seq:Seq2SeqWriter",
    "transformer": "models.transformer:TransformerWriter",
    "gan": "models.gan:GanWriter",
}


def load_model(directory: Path) -> WriterModel:
    """Loads any family's saved model directory (dispatching on the manifest's ``family``)."""
    import importlib

    family = read_manifest(directory)["family"]
    if family not in FAMILIES:
        raise ValueError(f"{directory}: unknown model family '{family}' (known: {', '.join(FAMILIES)})")
    module, _, name = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), name).load(Path(directory))
