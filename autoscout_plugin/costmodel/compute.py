"""FLOPs per sample: pure functions, 2 FLOPs per multiply-add.

Sources:
- Transformer forward FLOPs per token: Kaplan et al. 2020, "Scaling Laws for Neural Language
  Models", Table 1 (`2N + 2 n_layer n_ctx d_attn`), written out per matmul as in Narayanan et al.
  2021, "Efficient Large-Scale Language Model Training on GPU Clusters", Section 5.1.
- Backward = 2 x forward; full activation recomputation adds one forward (Chen et al. 2016;
  Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models").
"""

from __future__ import annotations

from .workload import Workload


def transformer_layer_fwd_flops_per_token(d_model: int, d_ff: int, seq_len: int) -> float:
    """One layer, one token: QKV `6d^2`, output projection `2d^2`, MLP `4 d d_ff`, attention scores
    and weighted sum `4 s d` (Narayanan et al. 2021, Sec. 5.1, per-token form)."""
    return 8.0 * d_model**2 + 4.0 * d_model * d_ff + 4.0 * seq_len * d_model


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
        per_token = workload.n_layer * transformer_layer_fwd_flops_per_token(workload.d_model, d_ff, workload.seq_len)
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
    """Forward + backward (2x forward) + one recomputed forward under full checkpointing."""
    return fwd_flops_per_sample(workload) * (4.0 if activation_checkpointing else 3.0)


def transformer_params(workload: Workload) -> int:
    """`12 L d^2`-style count written out: per layer `4d^2 + 2 d d_ff` weights plus biases and two
    layer norms; embeddings `V d + s d` (the LM head is tied to the token embedding)."""
    assert workload.n_layer and workload.d_model
    d, d_ff = workload.d_model, workload.d_ff or 4 * workload.d_model
    per_layer = 4 * d * d + 2 * d * d_ff + 4 * d + d_ff + d + 4 * d
    embeddings = (workload.vocab or 0) * d + (workload.seq_len or 0) * d
    return workload.n_layer * per_layer + embeddings + 2 * d


def param_count(workload: Workload) -> int:
    """The given `n_params`, else derived from the architecture; 0 when nothing is known."""
    if workload.n_params:
        return workload.n_params
    if workload.is_transformer:
        return transformer_params(workload)
    if workload.layers:
        return sum(layer.n_params() for layer in workload.layers)
    return 0
