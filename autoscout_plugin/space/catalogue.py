"""The knob catalogue: canonical names, kinds, structural/dense, conditions and defaults.

`make_knob(name, values)` builds a typed knob for a catalogue name over the given values; the
space builder and the replay benchmark both use it, so every space speaks the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np

from .knobs import Bool, Categorical, Condition, Float, Int, Knob, Value


@dataclass(frozen=True, slots=True)
class KnobSpec:
    """What the catalogue knows of one knob."""

    kind: Literal["int", "float", "categorical", "bool"]
    structural: bool
    log: bool = False
    parent: str | None = None
    """The knob exists only when `parent` takes one of `parent_values`."""
    parent_values: tuple[Value, ...] = ()
    default: Value | None = None
    doc: str = ""
    grid: tuple[Value, ...] = ()
    """The candidate values the space builder offers when it has no machine-specific list."""
    ddp_kwarg: str | None = None
    """The `DistributedDataParallel` argument this knob sets: every training adapter applies such a knob
    through its framework's DDP arguments, so a new DDP knob is one entry here."""


CATALOGUE: dict[str, KnobSpec] = {
    # structural (sparse) knobs
    "strategy": KnobSpec("categorical", True, default="single", doc="single, ddp, fsdp or deepspeed"),
    "num_processes": KnobSpec("int", True, default=1, doc="data-parallel processes on one node"),
    "num_nodes": KnobSpec("int", True, default=1),
    "tp": KnobSpec("int", True, default=1, doc="tensor-parallel degree"),
    "pp": KnobSpec("int", True, default=1, doc="pipeline-parallel degree"),
    "cp": KnobSpec("int", True, default=1, doc="context-parallel degree"),
    # `pp > 1` is not a value list: the builder lists the pp values above 1 in vp's condition.
    "vp": KnobSpec("int", True, parent="pp", default=1, doc="virtual pipeline stages (pp > 1)"),
    "zero_stage": KnobSpec("int", True, parent="strategy", parent_values=("deepspeed",), default=0),
    "fsdp_sharding": KnobSpec("categorical", True, parent="strategy", parent_values=("fsdp",),
                              default="full"),
    "cpu_offload": KnobSpec("bool", True, parent="strategy", parent_values=("fsdp", "deepspeed"),
                            default=False),
    "precision": KnobSpec("categorical", True, default="32-true"),
    "activation_checkpointing": KnobSpec("bool", True, default=False),
    "compile": KnobSpec("categorical", True, default="off"),
    "kv_cache": KnobSpec("categorical", True, default="dynamic"),
    "attn_implementation": KnobSpec("categorical", True, default="sdpa"),
    # dense (execution) knobs
    "micro_batch_size": KnobSpec("int", False, log=True),
    "grad_accum": KnobSpec("int", False, log=True, default=1),
    "num_threads": KnobSpec("int", False),
    "num_workers": KnobSpec("int", False, default=0),
    "pin_memory": KnobSpec("bool", False, default=False),
    "ddp_bucket_cap_mb": KnobSpec("float", False, log=True, parent="strategy", parent_values=("ddp",),
                                  default=25.0, grid=(5.0, 25.0, 100.0), ddp_kwarg="bucket_cap_mb"),
    "ddp_comm_hook": KnobSpec("categorical", False, parent="strategy", parent_values=("ddp",),
                              default="none"),
    "powersgd_rank": KnobSpec("int", False, parent="ddp_comm_hook", parent_values=("powersgd",), default=1),
    "ddp_static_graph": KnobSpec("bool", False, parent="strategy", parent_values=("ddp",), default=False,
                                 grid=(False, True), ddp_kwarg="static_graph"),
    "ddp_bucket_view": KnobSpec("bool", False, parent="strategy", parent_values=("ddp",), default=False,
                                grid=(False, True), ddp_kwarg="gradient_as_bucket_view",
                                doc="gradients as views into DDP's buckets: no copy, less memory"),
    "fsdp_reshard_after_forward": KnobSpec("bool", False, parent="strategy", parent_values=("fsdp",),
                                           default=True),
    "batch_size": KnobSpec("int", False, log=True, doc="inference batch size"),
    "max_batch_tokens": KnobSpec("int", False, log=True),
}

#: Canonical order: parents before children, structural before dense.
ORDER = list(CATALOGUE)

DDP_KWARGS: dict[str, str] = {name: spec.ddp_kwarg for name, spec in CATALOGUE.items() if spec.ddp_kwarg}
"""Catalogue knob -> the `DistributedDataParallel` argument it sets."""


def make_knob(name: str, values: list[Any], *, when: tuple[Condition, ...] = (),
              default: Value | None = None, structural: bool | None = None) -> Knob:
    """A typed knob named `name` over exactly `values`.

    A catalogue name takes its kind, scale and default from the catalogue; an unknown name becomes a
    categorical knob (structural when its values are not numbers).

    Example:
        >>> make_knob("micro_batch_size", [4, 16]).log
        True
    """
    spec = CATALOGUE.get(name)
    if not values:
        raise ValueError(f"knob {name!r}: no values given")
    values = _distinct([v.item() if isinstance(v, np.generic) else v for v in values])
    if spec is None:
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        return Categorical(name=name, choices=tuple(values),
                           structural=(not numeric) if structural is None else structural,
                           when=when, default=default)
    is_structural = spec.structural if structural is None else structural
    _check_values(name, spec.kind, values)
    fallback_default = spec.default if any(_same(spec.default, v) for v in values) else None
    common: dict[str, Any] = {"name": name, "structural": is_structural, "when": when,
                              "default": default if default is not None else fallback_default}
    if spec.kind == "int":
        return Int(**common, choices=tuple(int(v) for v in values), log=spec.log)
    if spec.kind == "float":
        return Float(**common, choices=tuple(float(v) for v in values), log=spec.log)
    if spec.kind == "bool":
        choices = tuple(v for v in (False, True) if any(v == x for x in values))
        return Categorical(**common, choices=choices) if len(choices) < 2 else Bool(**common)
    return Categorical(**common, choices=tuple(values))


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _distinct(values: list[Any]) -> list[Any]:
    """`values` without repeats, in order; `True` and `1` count as different values."""
    out: list[Any] = []
    for v in values:
        if not any(_same(v, seen) for seen in out):
            out.append(v)
    return out


def _check_values(name: str, kind: str, values: list[Any]) -> None:
    """Reject values a catalogue knob of `kind` cannot take, instead of coercing them (2.5 -> 2)."""
    def ok(v: Any) -> bool:
        if kind == "int":
            return isinstance(v, (Integral, float)) and not isinstance(v, bool) and float(v).is_integer()
        if kind == "float":
            return isinstance(v, Real) and not isinstance(v, bool)
        if kind == "bool":
            return isinstance(v, bool) or (isinstance(v, Integral) and v in (0, 1))
        return True

    bad = [v for v in values if not ok(v)]
    if bad:
        raise ValueError(f"knob {name!r} is {kind} in the catalogue; {bad!r} are not {kind} values")


def parse_cell(name: str, cell: str) -> Any:
    """A table cell as the catalogue value it stands for (`"true"` -> True, `"8"` -> 8)."""
    spec = CATALOGUE.get(name)
    text = cell.strip()
    kind = spec.kind if spec else None
    if kind == "categorical":
        return text
    if kind == "bool" or (kind is None and text.lower() in ("true", "false")):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"knob {name!r}: {cell!r} is not a boolean (true/false)")
        return text.lower() in ("true", "1")
    if kind == "int":
        return _parse_int(name, cell)
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"knob {name!r}: {cell!r} is not a number") from None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _parse_int(name: str, cell: str) -> int:
    text = cell.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"knob {name!r}: {cell!r} is not an integer") from None
    if not value.is_integer():
        raise ValueError(f"knob {name!r}: {cell!r} is not an integer")
    return int(value)
