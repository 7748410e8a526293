"""Results and reports of a tuning run."""

from __future__ import annotations

from .result import TuneResult, format_config
from .verdict import Verdict, make_verdict

__all__ = ["TuneResult", "Verdict", "format_config", "make_verdict"]
