"""The model families' settings, apart from the networks (no torch here).

The training steps take these as typed parameters, so ZenML validates a profile's values (through pydantic,
which runs each ``__post_init__`` check) before a run starts, and a cached run never imports torch to do it.
The network modules (:mod:`models.seq2seq`, :mod:`models.transformer`, :mod:`models.gan`) build from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.validation import STRICT, require_min
from weights.spec import CheckpointRef

ATTENTION_KINDS = ("bahdanau", "luong", "none")


@dataclass
class Seq2SeqShape:
    """The seq2seq network's size and attention (the profile's ``train_seq2seq`` ``model`` parameters)."""

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    emb_dim: int = 256
    hidden: int = 256
    layers: int = 1
    attention: str = "bahdanau"
    attn_dim: int = 64
    dropout: float = 0.2
    max_src_len: int = 96
    max_tgt_len: int = 400

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"{type(self).__name__}.attention must be one of {ATTENTION_KINDS}, "
                             f"got {self.attention!r}")
        if self.hidden % 2:
            raise ValueError(f"{type(self).__name__}.hidden must be even (two encoder directions), got {self.hidden}")
        require_min(self, ("emb_dim", "hidden", "attn_dim", "layers", "max_src_len", "max_tgt_len"), 1, integer=True)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{type(self).__name__}.dropout must be in [0, 1), got {self.dropout}")


@dataclass(kw_only=True)
class Seq2SeqConfig(Seq2SeqShape):
    """A built network's full config: its shape plus the vocabulary size and special ids of its tokenizer."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int


ADAPTERS = ("lora", "full")
GGUF_EXPORTS = ("keep", "q4_0", "q8_0", "f16", "f32", "none")  # see weights.export
RUNTIMES = ("llama.cpp", "torch")  # what runs a model (models.families.load_model); torch-free, for every config
DEFAULT_SYSTEM_PROMPT = "You write stories, fables and poems."


@dataclass
class TransformerConfig:
    """Model settings (the profile's ``train_transformer`` ``model`` parameters).

    Attributes:
        base_model: Empty to train GPT-2 from scratch on the shared tokenizer; otherwise a checkpoint spec
            (see :mod:`weights.checkpoints`) to fine-tune.
        n_layer: Transformer blocks (from scratch only).
        n_embd: Model width (from scratch only).
        n_head: Attention heads; must divide ``n_embd`` (from scratch only).
        context: Context length in tokens (prompt + instruction or separator + piece + end); at most the base's.
        dropout: Residual, embedding and attention dropout (from scratch only).
        max_prompt_tokens: Prompts are cut to this many tokens (instruction and control tokens not counted).
        adapter: With a base: ``lora`` trains a low-rank adapter (the base stays frozen), ``full`` every weight.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_r``).
        lora_dropout: Dropout on the LoRA path.
        lora_targets: Module names that get adapters (empty: peft's default for the architecture).
        chat_template: ``auto`` uses the base tokenizer's chat template when it has one; ``off`` never does.
        system_prompt: The system message of the chat layout ('' for none).
        forms: Forms the model was trained on (filled when it is built; the chat layout has no control tokens).
        genres: Genres the model was trained on (as ``forms``).
        gguf: How a Llama-architecture model is also saved as GGUF for the llama.cpp runtime: ``keep`` (the
            base's own tensors where unchanged, Q8_0 where the fine-tune changed them), ``q4_0`` (fastest here,
            but +15 % per-word perplexity), ``q8_0``, ``f16``, ``f32``, or ``none`` (no GGUF file; the torch
            runtime serves it). See :mod:`weights.export` and docs/serving.md "The llama.cpp runtime".
    """

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    base_model: CheckpointRef = ""
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    context: int = 512
    dropout: float = 0.0
    max_prompt_tokens: int = 96
    adapter: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=list)
    chat_template: str = "auto"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    forms: list[str] = field(default_factory=list)
    genres: list[str] = field(default_factory=list)
    gguf: str = "keep"

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        if self.gguf not in GGUF_EXPORTS:
            raise ValueError(f"TransformerConfig.gguf must be one of {GGUF_EXPORTS}, got {self.gguf!r}")
        require_min(self, ("n_layer", "n_embd", "n_head", "max_prompt_tokens", "lora_r", "lora_alpha"), 1, integer=True)
        if self.n_embd % self.n_head:
            raise ValueError(f"TransformerConfig.n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        if not isinstance(self.context, int) or self.context < self.max_prompt_tokens + 8:
            raise ValueError(f"TransformerConfig.context must be an integer ≥ max_prompt_tokens + 8 "
                             f"({self.max_prompt_tokens + 8}), got {self.context!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"TransformerConfig.dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"TransformerConfig.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not isinstance(self.base_model, str):
            raise ValueError(f"TransformerConfig.base_model must be a string, got {self.base_model!r}")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"TransformerConfig.adapter must be one of {ADAPTERS}, got {self.adapter!r}")
        if self.chat_template not in ("auto", "off"):
            raise ValueError(f"TransformerConfig.chat_template must be 'auto' or 'off', got {self.chat_template!r}")
        targets = self.lora_targets
        if not isinstance(targets, list | tuple) or not all(isinstance(t, str) for t in targets):
            raise ValueError(f"TransformerConfig.lora_targets must be a list of module names, got {targets!r}")
        self.lora_targets = list(self.lora_targets)


REWARDS = ("dense", "rollout")


@dataclass
class GanConfig:
    """Adversarial-training settings (the profile's ``train_gan`` ``gan`` parameters).

    Attributes:
        start_from: ``seq2seq`` fine-tunes the trained seq2seq model; ``scratch`` pre-trains a generator
            by MLE here for ``pretrain_epochs`` epochs first.
        pretrain_epochs: MLE epochs when ``start_from`` is ``scratch``.
        conditional: Whether real/fake is judged given the prompt (the discriminator must see prompts).
        reward: ``dense`` (per-step discriminator outputs) or ``rollout`` (Monte-Carlo completions).
        rollouts: Completions per step for ``rollout`` rewards.
        gamma: Discount of dense returns ``R_t = Σ γ^(s-t) r_s``.
        max_len: Tokens per adversarial sample (real pieces are cut to the same length).
        rounds: Adversarial rounds (each: ``g_steps`` generator then ``d_steps`` discriminator updates).
        g_steps: Generator updates per round.
        d_steps: Discriminator updates per round.
        d_pretrain_steps: Discriminator updates before the first round.
        batch_size: Prompts per update.
        g_lr: Generator learning rate (Adam, no weight decay: only the losses move the weights).
        d_lr: Discriminator learning rate.
        entropy_weight: Weight of the entropy bonus (against mode collapse).
        mle_weight: Weight of the MLE loss on real pieces mixed into each generator update.
        baseline: ``batch`` subtracts the per-step batch-mean return; ``none`` uses raw returns.
        temperature: Sampling temperature of the generator's adversarial samples.
        eval_prompts: Validation prompts sampled each round for BLEU / self-BLEU curves.
        eval_max_new_tokens: Length of those samples.
        eval_pieces: Validation pieces scored for the per-round perplexity (the final one uses all).
        collapse_patience: Rounds with discriminator accuracy ≥ 99 % and exploding generator MLE loss
            before training stops (the last good weights are kept).
        seed: Seed of sampling, batching and initialisation.
    """

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    start_from: str = "seq2seq"
    pretrain_epochs: int = 0
    conditional: bool = True
    reward: str = "dense"
    rollouts: int = 4
    gamma: float = 0.9
    max_len: int = 48
    rounds: int = 20
    g_steps: int = 1
    d_steps: int = 2
    d_pretrain_steps: int = 60
    batch_size: int = 32
    g_lr: float = 1e-4
    d_lr: float = 1e-3
    entropy_weight: float = 0.01
    mle_weight: float = 0.5
    baseline: str = "batch"
    temperature: float = 1.0
    eval_prompts: int = 24
    eval_max_new_tokens: int = 80
    eval_pieces: int = 200
    collapse_patience: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the setting."""
        if self.start_from not in ("seq2seq", "scratch"):
            raise ValueError(f"GanConfig.start_from must be 'seq2seq' or 'scratch', got {self.start_from!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"GanConfig.reward must be one of {REWARDS}, got {self.reward!r}")
        if self.reward == "rollout" and self.rollouts <= 0:
            raise ValueError(f"GanConfig.rollouts must be ≥ 1 for Monte-Carlo rollout rewards, got {self.rollouts}")
        if self.baseline not in ("batch", "none"):
            raise ValueError(f"GanConfig.baseline must be 'batch' or 'none', got {self.baseline!r}")
        if self.rounds > 0 and self.start_from == "scratch" and self.pretrain_epochs < 1:
            raise ValueError("GanConfig: adversarial rounds need a pre-trained generator; set pretrain_epochs ≥ 1 "
                             "or start_from: seq2seq")
        require_min(self, ("max_len", "batch_size", "g_steps", "d_steps", "eval_prompts", "eval_max_new_tokens",
                           "eval_pieces", "collapse_patience"), 1, integer=True)
        require_min(self, ("rounds", "d_pretrain_steps", "pretrain_epochs"), 0, integer=True)
        require_min(self, ("entropy_weight", "mle_weight"), 0)
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"GanConfig.gamma must be in [0, 1], got {self.gamma}")
        if self.g_lr <= 0 or self.d_lr <= 0 or self.temperature <= 0:
            raise ValueError("GanConfig.g_lr, d_lr and temperature must be > 0")


@dataclass
class DiscriminatorConfig:
    """Discriminator size (the profile's ``train_gan`` ``discriminator`` parameters)."""

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    emb_dim: int = 64
    hidden: int = 128
    dropout: float = 0.1
    use_prompt: bool = True

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        require_min(self, ("emb_dim", "hidden"), 1, integer=True)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"DiscriminatorConfig.dropout must be in [0, 1), got {self.dropout}")
