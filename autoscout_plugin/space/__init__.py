"""The configuration space: typed knobs, conditions, constraints, encoding, JSON."""

from __future__ import annotations

from .catalogue import CATALOGUE, KnobSpec, make_knob, parse_cell
from .constraints import (
    Constraint,
    Divides,
    GlobalBatch,
    Implies,
    MaxProduct,
    MemoryCap,
    WorldSize,
    constraint_from_json,
    data_parallel_degree,
    world_size,
)
from .knobs import Bool, Categorical, Condition, Float, Int, Knob, knob_from_json
from .space import Config, Space, SpaceError

__all__ = [
    "CATALOGUE", "Bool", "Categorical", "Condition", "Config", "Constraint", "Divides", "Float", "GlobalBatch",
    "Implies", "Int", "Knob", "KnobSpec", "MaxProduct", "MemoryCap", "Space", "SpaceError", "WorldSize",
    "constraint_from_json", "data_parallel_degree", "knob_from_json", "make_knob", "parse_cell", "world_size",
]
