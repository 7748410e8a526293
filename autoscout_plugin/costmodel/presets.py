"""Model presets: published architectures as `Workload`s (the planner needs no weights).

Sources:
- GPT-3 family: Brown et al. 2020, Table 2.1, and the NeMo GPT-3 configs (5B: 24 x 4096, 32 heads;
  20B: 44 x 6144, 48 heads; 40B: 48 x 8192, 64 heads); vocabulary 51,200 (GPT-2's 50,257 padded,
  as Megatron-LM does), sequence 2,048, tied embeddings, learned positions.
- Llama 2: Touvron et al. 2023 (7B 32 x 4096, 13B 40 x 5120, 70B 80 x 8192 with 8 KV heads;
  SwiGLU widths 11,008 / 13,824 / 28,672; vocabulary 32,000; sequence 4,096).
- Llama 3: Meta's model card (8B 32 x 4096, 8 KV heads, FFN 14,336; 70B 80 x 8192, 8 KV heads,
  FFN 28,672; vocabulary 128,256; sequence 8,192).
"""

from __future__ import annotations

from typing import Any

from .workload import Workload

_GPT3: dict[str, tuple[int, int, int]] = {
    # name: (layers, hidden, heads)
    "gpt3-125m": (12, 768, 12),
    "gpt3-350m": (24, 1024, 16),
    "gpt3-1.3b": (24, 2048, 16),
    "gpt3-2.7b": (32, 2560, 32),
    "gpt3-5b": (24, 4096, 32),
    "gpt3-6.7b": (32, 4096, 32),
    "gpt3-13b": (40, 5120, 40),
    "gpt3-20b": (44, 6144, 48),
    "gpt3-40b": (48, 8192, 64),
    "gpt3-175b": (96, 12288, 96),
}
_LLAMA: dict[str, tuple[int, int, int, int, int, int, int]] = {
    # name: (layers, hidden, heads, kv heads, ffn, vocab, seq)
    "llama2-7b": (32, 4096, 32, 32, 11008, 32000, 4096),
    "llama2-13b": (40, 5120, 40, 40, 13824, 32000, 4096),
    "llama2-70b": (80, 8192, 64, 8, 28672, 32000, 4096),
    "llama3-8b": (32, 4096, 32, 8, 14336, 128256, 8192),
    "llama3-70b": (80, 8192, 64, 8, 28672, 128256, 8192),
    "llama3-405b": (126, 16384, 128, 8, 53248, 128256, 8192),
}
PRESETS: tuple[str, ...] = tuple(_GPT3) + tuple(_LLAMA)


def preset(name: str, **overrides: Any) -> Workload:
    """A preset's `Workload`; `overrides` replace fields (e.g. `seq_len`, `global_batch`).

    Example:
        >>> w = preset("llama2-70b", global_batch=1024)
        >>> (w.n_layer, w.d_model, w.n_kv_head, w.kv_dim)
        (80, 8192, 8, 1024)
    """
    key = name.strip().lower()
    if key in _GPT3:
        layers, hidden, heads = _GPT3[key]
        base: dict[str, Any] = dict(n_layer=layers, d_model=hidden, n_head=heads, vocab=51200, seq_len=2048)
    elif key in _LLAMA:
        layers, hidden, heads, kv, ffn, vocab, seq = _LLAMA[key]
        base = dict(n_layer=layers, d_model=hidden, n_head=heads, n_kv_head=kv, d_ff=ffn, vocab=vocab, seq_len=seq,
                    gated_mlp=True, tied_embeddings=False, learned_positions=False)
    else:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Workload(family="transformer", arch="decoder", **base)


def gpt(n_layer: int, d_model: int, n_head: int, *, vocab: int = 51200, seq_len: int = 2048, **kw: Any) -> Workload:
    """A GPT-style decoder of any size (Megatron-LM's layout: GELU MLP of `4d`, tied embeddings)."""
    return Workload(family="transformer", arch="decoder", n_layer=n_layer, d_model=d_model, n_head=n_head,
                    vocab=vocab, seq_len=seq_len, **kw)


def workload_from_hf_config(config: Any, *, seq_len: int | None = None, global_batch: int | None = None) -> Workload:
    """A `Workload` from a Hugging Face config object (GPT-2, Llama, Mistral, BERT-style attribute
    names), read by attribute so no framework is imported here."""
    def first(*names: str) -> Any:
        for name in names:
            value = getattr(config, name, None)
            if value is not None:
                return value
        return None

    layers, hidden = first("num_hidden_layers", "n_layer"), first("hidden_size", "n_embd", "d_model")
    if not layers or not hidden:
        raise ValueError(f"{type(config).__name__} has no layer count/hidden size this planner can read")
    heads = first("num_attention_heads", "n_head")
    model_type = str(getattr(config, "model_type", ""))
    gated = model_type in ("llama", "mistral", "qwen2", "gemma", "mixtral") or first("hidden_act") == "silu"
    tied = first("tie_word_embeddings")
    return Workload(
        family="transformer", arch="encoder" if model_type in _ENCODERS else "decoder",
        n_layer=int(layers), d_model=int(hidden), n_head=int(heads) if heads else None,
        n_kv_head=first("num_key_value_heads"), d_ff=first("intermediate_size", "n_inner", "ffn_dim"),
        gated_mlp=gated, tied_embeddings=True if tied is None else bool(tied), learned_positions=not gated,
        vocab=first("vocab_size"), seq_len=seq_len or first("n_positions", "max_position_embeddings", "n_ctx"),
        global_batch=global_batch)


_ENCODERS = ("bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2")
