"""Pipeline-parallel schedules: the bubble of 1F1B and of the interleaved schedule.

Sources: Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters
Using Megatron-LM", Sec. 2.2: with `p` stages and `m` micro-batches per step, 1F1B (PipeDream-Flush)
idles for `(p - 1)` micro-batch times, a bubble fraction of `(p - 1) / m` of the ideal time; the
interleaved schedule with `v` model chunks per device cuts it to `(p - 1) / (v m)` at the price of
`v` times more point-to-point messages. GPipe has the same bubble as 1F1B but keeps all `m`
micro-batches' activations.
"""

from __future__ import annotations

from collections.abc import Sequence


def bubble_fraction(pp: int, micro_batches: int, vp: int = 1) -> float:
    """Idle time over ideal compute time: `(p - 1) / (v m)`.

    Example: 8 stages, 64 micro-batches, no interleaving, then 2 chunks per device:
        >>> bubble_fraction(8, 64), bubble_fraction(8, 64, vp=2)
        (0.109375, 0.0546875)
    """
    if pp < 1 or micro_batches < 1 or vp < 1:
        raise ValueError(f"pipeline sizes must be >= 1, got pp={pp}, micro_batches={micro_batches}, vp={vp}")
    return (pp - 1) / (vp * micro_batches)


def pipeline_step_s(stage_s: Sequence[float], micro_batches: int, vp: int = 1) -> float:
    """Time of one optimizer step through stages whose forward+backward of one micro-batch takes
    `stage_s[i]`: the slowest stage paces the steady state, the others add the fill and drain,
    shrunk by interleaving. Equal stages give `t (m + (p - 1) / v)`, i.e. `(1 + bubble) m t`.

    Example:
        >>> pipeline_step_s([1.0] * 4, 8), pipeline_step_s([1.0] * 4, 8, vp=3)
        (11.0, 9.0)
    """
    if not stage_s:
        raise ValueError("a pipeline needs at least one stage")
    slowest = max(stage_s)
    return micro_batches * slowest + (sum(stage_s) - slowest) / vp


def splits(n_layer: int, pp: int, vp: int = 1) -> bool:
    """Whether `stage_layers` can split `n_layer` layers over `pp` devices of `vp` chunks.

    Example:
        >>> splits(126, 16), splits(125, 16)
        (True, False)
    """
    try:
        stage_layers(n_layer, pp, vp)
    except ValueError:
        return False
    return True


def stage_layers(n_layer: int, pp: int, vp: int = 1) -> list[int]:
    """Transformer layers on each of the `pp` pipeline devices (all `vp` of its model chunks).

    Even when `pp * vp` divides the layers. Otherwise, if it divides `n_layer + 2`, the first and the
    last model chunk each hold one layer fewer, the embedding and the LM head with the loss standing in
    for a layer (Megatron Core's `account_for_embedding_in_pipeline_split` and
    `account_for_loss_in_pipeline_split`; Llama 3 405B, Dubey et al. 2024, Sec. 3.3.2: 126 layers on
    16 stages). Any other split raises `ValueError`.

    Example: 96 layers on 8 stages; 126 layers on 16 stages, then with 2 chunks per device:
        >>> stage_layers(96, 8)
        [12, 12, 12, 12, 12, 12, 12, 12]
        >>> stage_layers(126, 16)[:2], stage_layers(126, 16)[-1], stage_layers(126, 16, vp=2)[0]
        ([7, 8], 7, 7)
    """
    if pp < 1 or vp < 1 or n_layer < 1:
        raise ValueError(f"pipeline sizes must be >= 1, got n_layer={n_layer}, pp={pp}, vp={vp}")
    chunks = pp * vp
    if n_layer % chunks == 0:
        return [n_layer // pp] * pp
    if pp > 1 and (n_layer + 2) % chunks == 0 and (n_layer + 2) // chunks >= 2:
        layers = [(n_layer + 2) // pp] * pp
        layers[0] -= 1
        layers[-1] -= 1
        return layers
    raise ValueError(f"pp*vp = {pp}*{vp} does not split the {n_layer} layers: it must divide them, or divide "
                     f"{n_layer} + 2 with the first and last stages holding one layer fewer")
