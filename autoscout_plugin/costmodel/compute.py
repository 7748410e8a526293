"""FLOPs per sample: pure functions, 2 FLOPs per multiply-add.

Sources:
- Transformer forward FLOPs per token: Kaplan et al. 2020, "Scaling Laws for Neural Language
  Models", Table 1 (`2N + 2 n_layer n_ctx d_attn`), written out per matmul as in Narayanan et al.
  2021, "Efficient Large-Scale Language Model Training on GPU Clusters", Section 5.1.
- Backward = 2 x forward; full activation recomputation adds one forward of the checkpointed
  blocks (Chen et al. 2016; Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models").
"""

from __future__ import annotations

from .workload import Workload


def transformer_layer_fwd_flops_per_token(d_model: int, d_ff: int, seq_len: int, *, kv_dim: int | None = None,
                                          gated_mlp: bool = False) -> float:
    """One layer, one token: Q and output projections `4d^2`, K and V `4 d d_kv` (`d_kv = d` without
    grouped-query attention), MLP `4 d d_ff` (`6 d d_ff` when gated), attention scores and weighted
    sum `4 s d` (Narayanan et al. 2021, Sec. 5.1, per-token form: `24 d^2 + 4 s d` for GPT).

    Example:
        >>> transformer_layer_fwd_flops_per_token(4096, 16384, 2048) == 24 * 4096**2 + 4 * 2048 * 4096
        True
    """
    return transformer_layer_dense_flops_per_token(d_model, d_ff, kv_dim=kv_dim, gated_mlp=gated_mlp) \
        + attention_flops_per_token(d_model, seq_len)


def transformer_layer_dense_flops_per_token(d_model: int, d_ff: int, *, kv_dim: int | None = None,
                                            gated_mlp: bool = False) -> float:
    """The weight-matrix (GEMM) share of one layer's forward FLOPs per token: `2 x` its weights."""
    kv = d_model if kv_dim is None else kv_dim
    return 4.0 * d_model**2 + 4.0 * d_model * kv + (6.0 if gated_mlp else 4.0) * d_model * d_ff


def attention_flops_per_token(d_model: int, seq_len: int) -> float:
    """Scores `Q K^T` and the weighted sum `A V`: `2 s d` each per token, counted over the full
    sequence as Megatron's formula does (a causal kernel may skip half)."""
    return 4.0 * seq_len * d_model


def lm_head_fwd_flops_per_token(d_model: int, vocab: int) -> float:
    """Logits over the vocabulary: `2 d V` per token."""
    return 2.0 * d_model * vocab


def fwd_flops_per_sample(workload: Workload) -> float:
    """Forward FLOPs of one sample.

    Transformers use the closed form; CNN/MLP layer lists sum their layers; otherwise a measured
    `fwd_flops_per_sample`, else `2 * n_params` per sample (each weight used once: a dense MLP).
    """
    if workload.is_transformer:
        assert workload.n_layer and workload.d_model and workload.seq_len
        d_ff = workload.d_ff or 4 * workload.d_model
        per_token = workload.n_layer * transformer_layer_fwd_flops_per_token(
            workload.d_model, d_ff, workload.seq_len, kv_dim=workload.kv_dim, gated_mlp=workload.gated_mlp)
        if workload.arch == "decoder" and workload.vocab:
            per_token += lm_head_fwd_flops_per_token(workload.d_model, workload.vocab)
        return per_token * workload.seq_len
    if workload.layers:
        return sum(layer.fwd_flops() for layer in workload.layers)
    if workload.fwd_flops_per_sample:
        return float(workload.fwd_flops_per_sample)
    if workload.n_params:
        return 2.0 * workload.n_params * (workload.seq_len or 1)
    return 0.0


def train_flops_per_sample(workload: Workload, activation_checkpointing: bool) -> float:
    """Forward + backward (2x forward), plus the recomputed forward of the checkpointed blocks under
    full activation checkpointing (`recompute_flops_per_sample`)."""
    fwd = fwd_flops_per_sample(workload)
    return 3.0 * fwd + (recompute_flops_per_sample(workload) if activation_checkpointing else 0.0)


def recompute_flops_per_sample(workload: Workload) -> float:
    """Forward FLOPs that full activation checkpointing runs a second time: those of the checkpointed
    blocks (Chen et al. 2016). For a transformer those are the layers, not the embeddings or the LM
    head; for a layer list every layer but the last (the classifier head); else the whole forward.

    Example (a decoder whose 50k-vocabulary head is 93% of the forward recomputes only the rest):
        >>> w = Workload(family="transformer", n_layer=2, d_model=128, n_head=2, vocab=50257, seq_len=128)
        >>> round(recompute_flops_per_sample(w) / fwd_flops_per_sample(w), 3)
        0.067
    """
    fwd = fwd_flops_per_sample(workload)
    if workload.is_transformer:
        if workload.arch == "decoder" and workload.vocab:
            assert workload.d_model and workload.seq_len
            fwd -= lm_head_fwd_flops_per_token(workload.d_model, workload.vocab) * workload.seq_len
        return fwd
    if len(workload.layers) > 1:
        return fwd - workload.layers[-1].fwd_flops()
    return fwd


def transformer_layer_params(workload: Workload) -> int:
    """One layer's parameters. GPT: `4d^2 + 2 d d_ff` weights, biases and two layer norms (`12 d^2`
    per layer with `d_ff = 4d`, Narayanan et al. 2021). Llama: `2d^2 + 2 d d_kv + 3 d d_ff`, no
    biases, two RMS norms (Touvron et al. 2023)."""
    assert workload.d_model
    d, d_ff, kv = workload.d_model, workload.d_ff or 4 * workload.d_model, workload.kv_dim
    if workload.gated_mlp:
        return 2 * d * d + 2 * d * kv + 3 * d * d_ff + 2 * d
    return 2 * d * d + 2 * d * kv + 2 * d * d_ff + (3 * d + d) + d_ff + d + 4 * d


def embedding_params(workload: Workload) -> int:
    """Token embedding `V d`, an untied LM head another `V d`, learned positions `s d`, the final norm
    (LayerNorm `2d` for GPT, RMSNorm `d` for Llama-style gated models)."""
    assert workload.d_model
    d, vocab = workload.d_model, workload.vocab or 0
    positions = (workload.seq_len or 0) * d if workload.learned_positions else 0
    return vocab * d * (1 if workload.tied_embeddings else 2) + positions + (d if workload.gated_mlp else 2 * d)


def transformer_params(workload: Workload) -> int:
    """Layers plus embeddings (`12 L d^2 + V d + s d` for GPT, as in Narayanan et al. 2021)."""
    assert workload.n_layer and workload.d_model
    return workload.n_layer * transformer_layer_params(workload) + embedding_params(workload)


def param_count(workload: Workload) -> int:
    """The given `n_params`, else derived from the architecture; 0 when nothing is known."""
    if workload.n_params:
        return workload.n_params
    if workload.is_transformer:
        return transformer_params(workload)
    if workload.layers:
        return sum(layer.n_params() for layer in workload.layers)
    return 0
