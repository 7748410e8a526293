"""Derive the space for a workload on a machine from the catalogue.

What the machine cannot do is left out before any trial: no tensor/pipeline parallelism and no
FSDP CPU offload on CPU, no bf16 where the chips lack it, no fp16 autocast on CPU (no fast path),
no multi-process strategies on a single core. Knobs can be restricted (`include`) or pinned
(`pin`, one value each); pinned knobs stay in the space with a single value, so reports show them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .catalogue import CATALOGUE, make_knob
from .constraints import Constraint, Divides, GlobalBatch, Implies, MaxProduct, MemoryCap
from .knobs import Condition, Knob
from .space import Space, SpaceError


def _powers_of_two(low: int, high: int) -> list[int]:
    out, v = [], 1
    while v <= high:
        if v >= low:
            out.append(v)
        v *= 2
    return out


def _values(workload: dict[str, Any], hardware: dict[str, Any], strategies: list[str]) -> dict[str, list[Any]]:
    """Candidate values per catalogue knob for this workload and machine."""
    cpu = hardware.get("kind", "cpu") == "cpu"
    cores = int(hardware.get("cores", 1))
    devices = cores if cpu else int(hardware.get("gpus", 1))
    procs = [p for p in (1, 2, 4, 8) if p <= (min(devices, 8) if not cpu else max(min(cores, 8), 1))]
    gb = workload.get("global_batch")
    mbs = _powers_of_two(1, min(int(gb), 512) if gb else 64)
    # bf16 stays a candidate on CPUs without native bf16: the cost model expects it slower there, and
    # a trial settles it.
    precision = ["32-true", "bf16-mixed"] + ([] if cpu else ["16-mixed"])
    values: dict[str, list[Any]] = {
        "strategy": strategies,
        "num_processes": procs,
        "precision": precision,
        "activation_checkpointing": [False, True],
        "compile": ["off", "default"] + ([] if cpu else ["reduce-overhead", "max-autotune"]),
        "micro_batch_size": mbs,
        "num_threads": list(range(1, cores + 1)) if cpu else [max(cores // max(devices, 1), 1)],
        "num_workers": [0, 1, 2],
        "pin_memory": [False] if cpu else [False, True],
        "ddp_comm_hook": ["none", "fp16"] if cpu else ["none", "fp16", "bf16"],
        "fsdp_reshard_after_forward": [True, False],
        "fsdp_sharding": ["full", "shard_grad_op"],
        "cpu_offload": [False] if cpu else [False, True],
        "zero_stage": [0, 1, 2, 3],
    }
    for name, spec in CATALOGUE.items():
        if spec.grid and name not in values:
            values[name] = list(spec.grid)
    return values


def build_space(workload: dict[str, Any], hardware: dict[str, Any], *, include: Iterable[str] | None = None,
                pin: dict[str, Any] | None = None, strategies: Iterable[str] = ("single", "ddp"),
                memory_limit_mb: float | None = None, current: dict[str, Any] | None = None) -> Space:
    """The space of system configurations for `workload` on `hardware`.

    Args:
        workload: a `Workload.to_json()`-style dict (`global_batch`, `n_head`, `n_layer` are used).
        hardware: a `Hardware.to_json()`-style dict (`kind`, `cores`, `gpus`, `bf16`).
        include: knob names to search (default: the training knobs that apply here).
        pin: knob -> value, fixed (what the user set explicitly).
        strategies: strategies the caller can execute (e.g. `fsdp` only where the model supports it).
        memory_limit_mb: a memory cap, checked with the cost model's estimate.
        current: the values the user runs today, added to the candidates where the catalogue's
            grid lacks them (a batch size of 12, say), so their own config can be measured first.

    Example:
        >>> s = build_space({"global_batch": 32}, {"kind": "cpu", "cores": 2, "bf16": True})
        >>> sorted(s["precision"].choices)
        ['32-true', 'bf16-mixed']
    """
    pin = dict(pin or {})
    strategies = list(strategies)
    for key in ("global_batch", "n_head", "n_layer"):
        value = workload.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpaceError(f"workload {key} must be a positive integer, got {value!r}")
    cores = hardware.get("cores", 1)
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise SpaceError(f"hardware cores must be a positive integer, got {cores!r}")
    bad = [s for s in strategies if s not in ("single", "ddp", "fsdp", "deepspeed")]
    if bad or not strategies:
        raise SpaceError(f"unknown strategies {bad or strategies}; use some of single, ddp, fsdp, deepspeed")
    unknown = [k for k in list(include or []) + list(pin) if k not in CATALOGUE]
    if unknown:
        raise SpaceError(f"unknown knob(s) {unknown}; known knobs: {sorted(CATALOGUE)}")
    cpu = hardware.get("kind", "cpu") == "cpu"
    nodes = int(pin.get("num_nodes", 1))
    if nodes > 1:  # several nodes are never one process
        strategies = [s for s in strategies if s != "single"] or strategies
    elif cpu and int(hardware.get("cores", 1)) < 2:
        strategies = [s for s in strategies if s == "single"]
    values = _values(workload, hardware, strategies)
    for name, value in (current or {}).items():
        grid = values.get(name)
        if grid is not None and value not in grid and all(type(v) is type(value) for v in grid):
            values[name] = sorted([*grid, value]) if isinstance(value, (int, float)) else [*grid, value]
    default_include = ["strategy", "num_processes", "precision", "activation_checkpointing", "compile",
                       "micro_batch_size", "num_threads", "ddp_bucket_cap_mb", "fsdp_reshard_after_forward"]
    names = list(include) if include is not None else default_include
    names += [k for k in pin if k not in names]
    for name, value in pin.items():
        if name not in values:
            values[name] = [value]
        elif value not in values[name]:
            raise SpaceError(f"cannot pin {name!r} to {value!r} on this machine; possible values: {values[name]}")
        else:
            values[name] = [value]
    missing = [k for k in names if k not in values]
    if missing:
        raise SpaceError(f"knob(s) {missing} have no candidate values for a training run on this machine (tensor,"
                         " pipeline and context parallelism, nodes and inference knobs are not searched here);"
                         " pin them to one value or drop them from include")
    order = [k for k in CATALOGUE if k in names]
    knobs: list[Knob] = []
    for name in order:
        spec = CATALOGUE[name]
        when: tuple[Condition, ...] = ()
        if spec.parent is not None:
            parent = next((k for k in knobs if k.name == spec.parent), None)
            allowed = [v for v in spec.parent_values if parent is not None and parent.contains(v)]
            if not allowed:
                continue  # its parent never takes a value that activates it here
            when = (Condition(spec.parent, tuple(allowed)),)
        knobs.append(make_knob(name, values[name], when=when))
    space = Space(knobs, _constraints(workload, hardware, {k.name for k in knobs}, memory_limit_mb, nodes))
    space.check_satisfiable()
    return space


def _constraints(workload: dict[str, Any], hardware: dict[str, Any], names: set[str],
                 memory_limit_mb: float | None, nodes: int = 1) -> list[Constraint]:
    out: list[Constraint] = []
    if workload.get("global_batch") and "micro_batch_size" in names:
        out.append(GlobalBatch(int(workload["global_batch"])))
    if {"strategy", "num_processes"} <= names and nodes == 1:  # on several nodes one process per node is parallel
        out.append(Implies("strategy", ("single",), "num_processes", (1,)))
        out.append(Implies("strategy", ("ddp", "fsdp", "deepspeed"), "num_processes", (2, 4, 8)))
    if hardware.get("kind", "cpu") == "cpu" and "num_threads" in names:
        out.append(MaxProduct(tuple(k for k in ("num_threads", "num_processes") if k in names),
                              int(hardware.get("cores", 1)), "cores"))
    if workload.get("n_head") and "tp" in names:
        out.append(Divides("tp", int(workload["n_head"]), "attention heads"))
    if workload.get("n_layer") and "pp" in names:
        out.append(Divides("pp", int(workload["n_layer"]), "layers"))
    if memory_limit_mb is not None:
        out.append(MemoryCap(float(memory_limit_mb)))
    return out
