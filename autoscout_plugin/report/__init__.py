"""Results and reports of a tuning run."""

from __future__ import annotations

from .result import TuneResult, format_config

__all__ = ["TuneResult", "format_config"]
