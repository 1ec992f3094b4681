"""Plots of model behaviour, returned as PIL images (ZenML shows them; MLflow logs them)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd
from PIL import Image


def _to_image(fig) -> Image.Image:  # noqa: ANN001 - matplotlib Figure
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def attention_heatmaps(maps: Sequence[tuple[str, list[str], list[str], object]], max_out: int = 40) -> Image.Image:
    """One heatmap per prompt: generated tokens (rows) attending over prompt tokens (columns).

    Args:
        maps: ``(title, prompt tokens, generated tokens, weights (T, S))`` per prompt.
        max_out: Rows shown per heatmap (the first generated tokens).

    Returns:
        The figure as an image.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(maps), 1, figsize=(11, 4.2 * len(maps)), squeeze=False)
    for ax, (title, src, out, weights) in zip(axes[:, 0], maps, strict=True):
        w = weights[:max_out].numpy()
        ax.imshow(w, aspect="auto", cmap="magma", vmin=0.0)
        ax.set_xticks(range(len(src)), [t.strip() or "␣" for t in src], rotation=70, fontsize=7)
        ax.set_yticks(range(w.shape[0]), [t.replace("\n", "⏎").strip() or "␣" for t in out[: w.shape[0]]], fontsize=7)
        ax.set_title(title[:110], fontsize=9)
        ax.set_xlabel("prompt token (control tokens first)")
        ax.set_ylabel("generated token")
    fig.tight_layout()
    return _to_image(fig)


def training_curves(history: pd.DataFrame, title: str) -> Image.Image:
    """Train/validation loss and validation per-word perplexity by epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax1.plot(history["epoch"], history["train_loss"], "o-", label="train")
    ax1.plot(history["epoch"], history["val_loss"], "o-", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("token loss (nats)")
    ax1.legend(frameon=False)
    ax2.plot(history["epoch"], history["val_ppl_word"], "o-", color="#e66a6a")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation per-word perplexity")
    fig.suptitle(title)
    fig.tight_layout()
    return _to_image(fig)


def gan_tradeoff(comparison: pd.DataFrame, history: pd.DataFrame) -> Image.Image:
    """Left: quality (BLEU-4) vs diversity (self-BLEU-4) over the temperature sweep, MLE vs GAN.

    Right: BLEU-4, self-BLEU-4 and validation per-word perplexity of samples by adversarial round.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for model, group in comparison.groupby("model", sort=False):
        group = group.sort_values("temperature")
        ax1.plot(group["self_bleu4"], group["bleu4"], "o-", label=model)
        for _, row in group.iterrows():
            ax1.annotate(f"T={row['temperature']:g}", (row["self_bleu4"], row["bleu4"]), fontsize=7,
                         textcoords="offset points", xytext=(4, 4))
    ax1.set_xlabel("self-BLEU-4 (lower = more diverse)")
    ax1.set_ylabel("BLEU-4 vs reference (higher = closer)")
    ax1.set_title("quality–diversity, temperature sweep")
    ax1.legend(frameon=False)
    ax2.plot(history["round"], history["bleu4"], "o-", label="BLEU-4")
    ax2.plot(history["round"], history["self_bleu4"], "o-", label="self-BLEU-4")
    ax2.set_xlabel("adversarial round (0 = before)")
    ax2.set_ylabel("BLEU")
    ppl = ax2.twinx()
    ppl.plot(history["round"], history["val_ppl_word"], "s--", color="#999999", label="val ppl/word")
    ppl.set_ylabel("validation per-word perplexity")
    ax2.legend(loc="upper left", frameon=False, fontsize=8)
    ax2.set_title("samples by round (T = 1)")
    fig.tight_layout()
    return _to_image(fig)
