"""The promise "the global batch never changes" in one value: how the samples of one optimizer step
are split into micro-batch x gradient accumulation x processes. Every adapter, the step probe and
the space use this split verbatim; a split that does not divide is invalid everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class BatchSplitError(ValueError):
    """A micro-batch and process count that do not divide the global batch."""


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BatchSplitError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class BatchSplit:
    """Samples per optimizer step = `micro_batch` x `grad_accum` x `processes`, checked on construction.

    Example:
        >>> BatchSplit.of(64, micro_batch=8, processes=2).grad_accum
        4
        >>> BatchSplit.of(64, micro_batch=6, processes=2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        autoscout_plugin.batch.BatchSplitError: micro_batch 6 x processes 2 = 12 does not divide the global batch 64...
    """

    global_batch: int
    micro_batch: int
    grad_accum: int = 1
    processes: int = 1

    def __post_init__(self) -> None:
        for name in ("global_batch", "micro_batch", "grad_accum", "processes"):
            _positive(name, getattr(self, name))
        product = self.micro_batch * self.grad_accum * self.processes
        if product != self.global_batch:
            raise BatchSplitError(f"micro_batch {self.micro_batch} x grad_accum {self.grad_accum} x processes"
                                  f" {self.processes} = {product}, not the global batch {self.global_batch}")

    @classmethod
    def of(cls, global_batch: int, *, micro_batch: int, processes: int = 1) -> BatchSplit:
        """The split keeping `global_batch` with this micro-batch and process count (accumulation derived)."""
        _positive("global_batch", global_batch)
        per_step = _positive("micro_batch", micro_batch) * _positive("processes", processes)
        if global_batch % per_step:
            per_process = global_batch // processes if global_batch % processes == 0 else f"{global_batch}/{processes}"
            raise BatchSplitError(f"micro_batch {micro_batch} x processes {processes} = {per_step} does not divide the"
                                  f" global batch {global_batch}: no whole grad_accum keeps it; use a micro_batch"
                                  f" that divides {per_process}")
        return cls(global_batch, micro_batch, global_batch // per_step, processes)

    @property
    def per_process(self) -> int:
        """Samples one process handles per optimizer step (micro-batch x accumulation)."""
        return self.micro_batch * self.grad_accum

    def for_config(self, config: dict[str, Any]) -> BatchSplit:
        """The split of the same global batch under `config` (its `micro_batch_size`, and `num_processes` per
        node times `num_nodes`).

        Raises:
            BatchSplitError: the config's micro-batch and process count do not divide the global batch.

        Example:
            >>> two_nodes = {"micro_batch_size": 4, "num_processes": 1, "num_nodes": 2}
            >>> BatchSplit(16, 8, 1, 2).for_config(two_nodes).grad_accum
            2
        """
        processes = self.processes
        if "num_processes" in config:
            processes = int(config["num_processes"]) * int(config.get("num_nodes", 1))
        return BatchSplit.of(self.global_batch, micro_batch=int(config.get("micro_batch_size", self.micro_batch)),
                             processes=processes)

    def to_json(self) -> dict[str, int]:
        return {"global_batch": self.global_batch, "micro_batch": self.micro_batch, "grad_accum": self.grad_accum,
                "processes": self.processes}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchSplit:
        return cls(**{k: data[k] for k in ("global_batch", "micro_batch", "grad_accum", "processes")})
