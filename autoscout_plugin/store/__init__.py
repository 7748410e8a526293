"""Trial history: studies keyed by fingerprint, their trials and winners; resume and warm start.

`SQLiteStore` (one file, several processes) is the default; `InMemoryStore` serves tests and
replay. Both follow the `TrialStore` contract and keep everything as JSON.
"""

from __future__ import annotations

from .base import TrialStore
from .errors import StoreError, UnknownStudyError
from .fingerprint import canonical_json, fingerprint, hardware_key, similarity
from .memory import InMemoryStore
from .sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = [
    "SCHEMA_VERSION",
    "InMemoryStore",
    "SQLiteStore",
    "StoreError",
    "TrialStore",
    "UnknownStudyError",
    "canonical_json",
    "fingerprint",
    "hardware_key",
    "similarity",
]
