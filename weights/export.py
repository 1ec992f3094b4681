"""A Transformer candidate as one GGUF file that llama.cpp serves: the base with the adapter merged in.

:func:`export_gguf` writes a Llama-architecture causal LM (a LoRA fine-tune merged into its base) with the
``gguf`` package's own writer, names, quantizers and tokenizer readers (``GGUFWriter``,
``TensorNameMap``, ``gguf.quants``, ``SpecialVocab``), the same pieces llama.cpp's ``convert_hf_to_gguf.py``
uses; q and k are permuted to llama.cpp's rotary layout as that script does.

What each tensor becomes (``quant``):

- ``keep`` (the default): a tensor the fine-tune left as the base has it is copied byte for byte from the
  base's own GGUF file (the original Q4_1 blocks of ``SmolLM2-135M-Instruct.Q4_1.gguf``), and a tensor it
  changed (the LoRA targets) is written as Q8_0. The untouched weights are exactly the ones the PyTorch
  model was dequantized from, and the changed ones lose only Q8_0's rounding: close to the PyTorch
  model's likelihood at about the base file's size and speed (docs/serving.md "The llama.cpp runtime" has the
  measurements that chose it). Without a base GGUF file (a ``save_pretrained`` base such as
  ``tiny:llama-chat``), every matrix is written as Q8_0;
- ``q4_0``, ``q8_0``, ``f16``, ``f32``: every matrix in that type (norms stay F32). Q4_0 is the fastest
  here (llama.cpp repacks it for AVX2) but re-quantizing the base's Q4_1 weights costs about 15 % in
  per-word perplexity, so it is not the default.

The metadata (hyper-parameters, vocabulary, merges, special tokens, chat template) comes from the base's
GGUF file when the vocabulary is unchanged, else it is built from the model's config and tokenizer
folder. Prompts are tokenized on the Python side with the model's own tokenizer (so both runtimes read
the same ids); the vocabulary in the file makes it loadable by any llama.cpp program as well.

The file is written beside its final place and renamed into it only when complete.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weights.gguf import file_sha256

log = logging.getLogger(__name__)

QUANTS = ("keep", "q8_0", "q4_0", "f16", "f32")
INTERNAL_FIELDS = ("GGUF.", "general.architecture", "general.file_type", "general.quantization_version")


class ExportError(ValueError):
    """A model that cannot be written as GGUF (the message names the model and what is wrong)."""


@dataclass(frozen=True)
class Exported:
    """What :func:`export_gguf` wrote.

    Attributes:
        path: The GGUF file.
        sha256: Its SHA-256.
        quant: The ``quant`` asked for.
        bytes: Its size.
        kept: Tensors copied byte for byte from the base's GGUF file.
        written: Tensors written from the model's weights.
        seconds: How long the export took.
    """

    path: str
    sha256: str
    quant: str
    bytes: int
    kept: int
    written: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The record as plain values (for the manifest)."""
        return asdict(self)


def permute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorders the rows of a q or k projection from Hugging Face's rotary layout to llama.cpp's (interleaved).

    The same reshaping as ``LlamaModel.permute`` in llama.cpp's ``convert_hf_to_gguf.py``: ``n_head`` is
    the number of attention heads for q and of key/value heads for k.
    """
    rows = weights.shape[0]
    return (weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2)
            .reshape(weights.shape))


def _base_tensors(base_gguf: Path | None) -> tuple[Any, dict[str, Any]]:
    """The base file's reader and its tensors by name (none without a base file)."""
    if base_gguf is None:
        return None, {}
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(base_gguf))
    except Exception as exc:  # ValueError, struct.error, ... on a damaged file
        raise ExportError(f"base GGUF {base_gguf} is not readable ({type(exc).__name__}: {exc})") from None
    return reader, {t.name: t for t in reader.tensors}


def _copy_fields(writer: Any, reader: Any, skip: tuple[str, ...] = ()) -> None:
    """The base file's metadata, except what the writer sets itself and the keys in ``skip``."""
    for key, field in reader.fields.items():
        if key.startswith(INTERNAL_FIELDS) or key in skip or not field.types:
            continue
        sub_type = field.types[-1] if len(field.types) > 1 else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub_type)


def _built_fields(writer: Any, config: Any, tokenizer_dir: Path, tokenizer: Any) -> None:
    """Hyper-parameters from the model's config, vocabulary and special tokens from its tokenizer."""
    import gguf

    heads = config.num_attention_heads
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_rope_dimension_count(int(getattr(config, "head_dim", None) or config.hidden_size // heads))
    writer.add_head_count(int(heads))
    writer.add_head_count_kv(int(config.num_key_value_heads or heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", None) or 10000.0))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    special = set(tokenizer.all_special_ids)
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    tokens, types = [], []
    for i in range(int(config.vocab_size)):
        tokens.append(vocab.get(i, f"[PAD{i}]"))
        types.append(gguf.TokenType.CONTROL if i in special else
                     gguf.TokenType.NORMAL if i in vocab else gguf.TokenType.UNUSED)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def export_gguf(model: Any, tokenizer: Any, tokenizer_dir: Path, out: Path, quant: str = "keep",
                base_gguf: Path | None = None, name: str = "") -> Exported:
    """Writes ``model`` (a Llama-architecture causal LM, adapter merged) as one GGUF file at ``out``.

    Args:
        model: The merged ``transformers`` model (``LlamaForCausalLM``).
        tokenizer: Its tokenizer.
        tokenizer_dir: The folder the tokenizer was saved to (its ``tokenizer.json`` holds the merges).
        out: The GGUF file to write.
        quant: ``keep``, ``q8_0``, ``f16`` or ``f32`` (see the module docstring).
        base_gguf: The base's own GGUF file, if it came from one (its tensors and metadata are reused).
        name: ``general.name`` of the file.

    Returns:
        What was written.

    Raises:
        ExportError: For a model that is not Llama-architecture, an unknown ``quant``, an unreadable base
            file, or a tensor llama.cpp has no name for.
    """
    import gguf
    import torch

    started = time.perf_counter()
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer logs every file it writes at INFO
    config = model.config
    if quant not in QUANTS:
        raise ExportError(f"gguf quant {quant!r} is not one of {', '.join(QUANTS)}")
    if getattr(config, "model_type", "") != "llama":
        raise ExportError(f"only Llama-architecture models export to GGUF here; this one is "
                          f"{getattr(config, 'model_type', type(model).__name__)!r} (the torch runtime serves it)")
    reader, base = _base_tensors(base_gguf)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(temporary, "llama")
        if reader is not None and _vocab_size(reader) == int(config.vocab_size):
            _copy_fields(writer, reader, skip=("general.name",) if name else ())
        else:
            _built_fields(writer, config, Path(tokenizer_dir), tokenizer)
        if name:
            writer.add_name(name)
        names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, int(config.num_hidden_layers))
        heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads or config.num_attention_heads)
        kept = written = 0
        changed_type = gguf.GGMLQuantizationType.Q8_0 if quant in ("keep", "q8_0") else \
            gguf.GGMLQuantizationType[quant.upper()]
        state = model.state_dict()
        for hf_name, tensor in state.items():
            if hf_name == "lm_head.weight" and getattr(config, "tie_word_embeddings", False):
                continue  # llama.cpp reads the token embeddings as the output layer when there is none
            target = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise ExportError(f"tensor {hf_name} has no llama.cpp name (not a plain Llama model?)")
            data = tensor.detach().to(torch.float32).cpu().numpy()
            if hf_name.endswith("q_proj.weight"):
                data = permute_rotary(data, heads)
            elif hf_name.endswith("k_proj.weight"):
                data = permute_rotary(data, kv_heads)
            original = base.get(target)
            if quant == "keep" and original is not None and _same(original, data):
                writer.add_tensor(target, original.data, raw_dtype=original.tensor_type)
                kept += 1
                continue
            qtype = changed_type if data.ndim == 2 else gguf.GGMLQuantizationType.F32
            if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) and \
                    data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
                qtype = gguf.GGMLQuantizationType.F16  # rows that do not split into whole blocks
            writer.add_tensor(target, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            written += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    done = Exported(path=str(out), sha256=file_sha256(out), quant=quant, bytes=out.stat().st_size, kept=kept,
                    written=written, seconds=round(time.perf_counter() - started, 2))
    log.info("exported %s (%s, %.1f MB: %d tensors kept from the base, %d written) in %.1f s", out.name, quant,
             done.bytes / 1e6, kept, written, done.seconds)
    return done


def _vocab_size(reader: Any) -> int:
    """How many tokens the base file's vocabulary holds (-1 when it has none)."""
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return len(tokens.data) if tokens is not None else -1


def _same(original: Any, data: np.ndarray) -> bool:
    """Whether a base tensor dequantizes to exactly ``data`` (the fine-tune left it unchanged)."""
    import gguf

    if int(original.n_elements) != data.size:
        return False
    values = gguf.quants.dequantize(original.data, original.tensor_type).reshape(data.shape)
    return bool(np.array_equal(values, data))
