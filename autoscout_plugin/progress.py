"""Trial steps that count as training (`AutoScoutOptions.keep_progress`; framework-free).

A trial trains the user's model for a few optimizer steps. Where its config differs from the user's own
only in knobs that do not change the training math, those steps are the main run's first steps, run
another way: an integration that can carry them over continues each such trial from where the previous
one stopped (weights, optimizer and scheduler state, step count, RNG state and the position in the data)
and starts the main run from the last of them, so neither the user's config (trial 0) nor those trials
are thrown away.

What stays the same as a run without tuning: the samples of every optimizer step, in the same order (the
main run resumes past the samples the kept trials consumed); the global batch of every step; the
optimizer, the learning-rate schedule and the loss. What may differ: floating-point summation order (a
micro-batch split with accumulation, another thread count); the RNG stream of a step (dropout) when
dataloader workers change. A trial with another precision, `compile`, activation checkpointing or
strategy is timed and rolled back, as without the option. Loggers, evaluation and checkpoint callbacks
of the user do not see the kept steps: the main run starts at the step after them.
"""

from __future__ import annotations

from .space import Config
from .space.catalogue import DDP_KWARGS

NEUTRAL_KNOBS: tuple[str, ...] = ("num_threads", "num_workers", "pin_memory", "micro_batch_size", *DDP_KWARGS)
"""Knobs that leave the training math as it is: threads, dataloader workers and pinned memory change how
fast the same samples arrive and are summed; a micro-batch with accumulation keeping the global batch sums
the same samples' gradients in another order; the DDP bucket arguments change when gradients are reduced,
not what is reduced."""


def keeps_math(config: Config, baseline: Config | None, *, batch_dependent: bool = False) -> bool:
    """Whether `config` trains as the user's `baseline` does, up to floating-point summation order.

    `batch_dependent`: the model's math depends on the micro-batch itself (batch normalisation), so a
    micro-batch change is not neutral.

    Example:
        >>> user = {"precision": "32-true", "micro_batch_size": 8, "num_workers": 0}
        >>> keeps_math({**user, "micro_batch_size": 4, "num_workers": 2}, user)
        True
        >>> keeps_math({**user, "precision": "bf16-mixed"}, user)
        False
        >>> keeps_math({**user, "micro_batch_size": 4}, user, batch_dependent=True)
        False
    """
    if baseline is None:
        return False
    neutral = set(NEUTRAL_KNOBS) - ({"micro_batch_size"} if batch_dependent else set())
    changed = {k for k in set(config) | set(baseline) if config.get(k) != baseline.get(k)}
    return changed <= neutral


__all__ = ["NEUTRAL_KNOBS", "keeps_math"]
