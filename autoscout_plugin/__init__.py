"""AutoScout: finds the fastest system configuration for a PyTorch job.

Importing this package loads no framework (torch, lightning, transformers); integrations load
theirs when used: `from autoscout_plugin import AutoScoutCallback` imports Lightning only when the
name is first touched, and `tune_inference` imports torch (and transformers for causal LMs) likewise.
"""

from __future__ import annotations

from typing import Any

from .options import AutoScoutOptions
from .serving import InferenceOptions, RequestMix
from .space import Space, SpaceError

__version__ = "0.1.0"
__all__ = ["AutoScoutCallback", "AutoScoutOptions", "InferenceOptions", "RequestMix", "Space", "SpaceError",
           "apply_inference", "tune_inference", "__version__"]

_LAZY = {"AutoScoutCallback": "autoscout_plugin.integrations.lightning",
         "tune_inference": "autoscout_plugin.integrations.inference",
         "apply_inference": "autoscout_plugin.integrations.inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autoscout_plugin' has no attribute {name!r}")
