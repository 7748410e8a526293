"""Constraints as data: printable, serialisable, checked before anything is profiled.

Each constraint answers `violation(config)` with `None` (satisfied) or a message that names the
knob and the value. Knobs absent from a config take their neutral value (1 for degrees and counts),
so a space without `tp` simply has `tp = 1`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from .knobs import Value, _same_value

#: Knobs whose absence means "1" (parallel degrees and counts).
_NEUTRAL_ONE = ("num_processes", "num_nodes", "tp", "pp", "cp", "vp", "grad_accum")


def _get(config: dict[str, Any], name: str) -> Any:
    if name in config:
        return config[name]
    return 1 if name in _NEUTRAL_ONE else None


def world_size(config: dict[str, Any]) -> int:
    """Processes in the job: `num_processes * num_nodes`."""
    return int(_get(config, "num_processes")) * int(_get(config, "num_nodes"))


def model_parallel_degree(config: dict[str, Any]) -> int:
    """`tp * pp * cp`: the ranks that hold one replica of the model."""
    return int(_get(config, "tp")) * int(_get(config, "pp")) * int(_get(config, "cp"))


def data_parallel_degree(config: dict[str, Any]) -> int:
    """`world / (tp * pp * cp)`; 0 where the degrees do not divide the world size."""
    world, mp = world_size(config), model_parallel_degree(config)
    return world // mp if world % mp == 0 else 0


@dataclass(frozen=True, slots=True)
class GlobalBatch:
    """`micro_batch_size * grad_accum * dp == global_batch`; `grad_accum` is derived, never searched.

    Example:
        >>> GlobalBatch(64).grad_accum({"micro_batch_size": 8, "num_processes": 2})
        4
    """

    global_batch: int
    kind: ClassVar[str] = "global_batch"

    def __post_init__(self) -> None:
        if self.global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {self.global_batch}")

    def grad_accum(self, config: dict[str, Any]) -> int | None:
        mbs, dp = _get(config, "micro_batch_size"), data_parallel_degree(config)
        if mbs is None or dp == 0:
            return None
        per_step = int(mbs) * dp
        return self.global_batch // per_step if self.global_batch % per_step == 0 else None

    def violation(self, config: dict[str, Any]) -> str | None:
        mbs = _get(config, "micro_batch_size")
        if mbs is None:
            return None
        dp = data_parallel_degree(config)
        if dp == 0:
            return (f"tp x pp x cp = {model_parallel_degree(config)} does not divide the world size"
                    f" {world_size(config)}, so micro_batch_size={mbs} has no data-parallel degree"
                    f" for global_batch={self.global_batch}")
        accum = self.grad_accum(config)
        if accum is None:
            return (f"micro_batch_size={mbs} x data-parallel degree {dp} does not divide"
                    f" global_batch={self.global_batch}")
        # A config may carry grad_accum (e.g. with the derived values merged in): it must agree.
        if "grad_accum" in config and config["grad_accum"] != accum:
            given = config["grad_accum"]
            return (f"grad_accum={given!r} with micro_batch_size={mbs} x data-parallel degree {dp}"
                    f" does not give global_batch={self.global_batch}; use grad_accum={accum}")
        return None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "global_batch": self.global_batch}

    def __str__(self) -> str:
        return f"micro_batch_size x grad_accum x dp == {self.global_batch}"


@dataclass(frozen=True, slots=True)
class WorldSize:
    """`tp * pp * cp * dp == world_size` for a job on a fixed number of devices."""

    world_size: int
    kind: ClassVar[str] = "world_size"

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")

    def violation(self, config: dict[str, Any]) -> str | None:
        world, mp = world_size(config), model_parallel_degree(config)
        if world != self.world_size:
            return (f"num_processes={_get(config, 'num_processes')} x num_nodes={_get(config, 'num_nodes')}"
                    f" = {world} but the job has world_size={self.world_size}")
        if world % mp:
            degrees = " x ".join(f"{k}={_get(config, k)}" for k in ("tp", "pp", "cp"))
            return f"{degrees} = {mp} does not divide world_size={world}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "world_size": self.world_size}

    def __str__(self) -> str:
        return f"tp x pp x cp x dp == {self.world_size}"


@dataclass(frozen=True, slots=True)
class Divides:
    """`config[knob]` must divide `total` (e.g. attention heads by `tp`, layers by `pp`)."""

    knob: str
    total: int
    what: str
    kind: ClassVar[str] = "divides"

    def violation(self, config: dict[str, Any]) -> str | None:
        value = _get(config, self.knob)
        if value is None:
            return None
        if int(value) < 1 or self.total % int(value):
            return f"{self.knob}={value} does not divide {self.what}={self.total}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "knob": self.knob, "total": self.total, "what": self.what}

    def __str__(self) -> str:
        return f"{self.knob} divides {self.what} ({self.total})"


@dataclass(frozen=True, slots=True)
class MaxProduct:
    """The product of `knobs` is at most `limit` (e.g. threads x processes <= cores)."""

    knobs: tuple[str, ...]
    limit: int
    what: str
    kind: ClassVar[str] = "max_product"

    def __post_init__(self) -> None:
        object.__setattr__(self, "knobs", tuple(self.knobs))

    def violation(self, config: dict[str, Any]) -> str | None:
        values = [_get(config, k) for k in self.knobs]
        if any(v is None for v in values):
            return None
        if math.prod(int(v) for v in values) > self.limit:
            shown = " x ".join(f"{k}={v}" for k, v in zip(self.knobs, values, strict=True))
            return f"{shown} exceeds {self.what}={self.limit}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "knobs": list(self.knobs), "limit": self.limit, "what": self.what}

    def __str__(self) -> str:
        return f"{' x '.join(self.knobs)} <= {self.what} ({self.limit})"


@dataclass(frozen=True, slots=True)
class Implies:
    """If `if_knob` is in `if_values`, then `then_knob` must be in `then_values`."""

    if_knob: str
    if_values: tuple[Value, ...]
    then_knob: str
    then_values: tuple[Value, ...]
    kind: ClassVar[str] = "implies"

    def __post_init__(self) -> None:
        object.__setattr__(self, "if_values", tuple(self.if_values))
        object.__setattr__(self, "then_values", tuple(self.then_values))

    def violation(self, config: dict[str, Any]) -> str | None:
        condition = _get(config, self.if_knob)
        if not any(_same_value(condition, v) for v in self.if_values):
            return None
        value = _get(config, self.then_knob)
        if value is None or any(_same_value(value, v) for v in self.then_values):
            return None
        return (f"{self.then_knob}={value!r} is not allowed with {self.if_knob}={condition!r};"
                f" use one of {list(self.then_values)}")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "if_knob": self.if_knob, "if_values": list(self.if_values),
                "then_knob": self.then_knob, "then_values": list(self.then_values)}

    def __str__(self) -> str:
        return f"{self.if_knob} in {list(self.if_values)} => {self.then_knob} in {list(self.then_values)}"


@dataclass(frozen=True, slots=True)
class MemoryCap:
    """Predicted peak memory per device must stay within `limit_mb`; needs a memory estimator."""

    limit_mb: float
    kind: ClassVar[str] = "memory_cap"

    def violation(self, config: dict[str, Any], memory_mb: Callable[[dict[str, Any]], float] | None = None,
                  ) -> str | None:
        if memory_mb is None:
            return None
        predicted = memory_mb(config)
        if predicted > self.limit_mb:
            return f"predicted peak memory {predicted:.0f} MB exceeds the cap of {self.limit_mb:.0f} MB"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "limit_mb": self.limit_mb}

    def __str__(self) -> str:
        return f"peak memory <= {self.limit_mb:.0f} MB"


Constraint = GlobalBatch | WorldSize | Divides | MaxProduct | Implies | MemoryCap

_KINDS: dict[str, Any] = {
    c.kind: c for c in (GlobalBatch, WorldSize, Divides, MaxProduct, Implies, MemoryCap)
}


def constraint_from_json(data: dict[str, Any]) -> Constraint:
    """Rebuild a constraint from its `to_json()` form."""
    kind = data.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"unknown constraint kind {kind!r}; known: {sorted(_KINDS)}")
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k != "kind"}
    try:
        return _KINDS[kind](**fields)  # type: ignore[no-any-return]
    except TypeError as err:
        raise ValueError(f"constraint {kind!r}: bad fields {sorted(fields)} ({err})") from None
