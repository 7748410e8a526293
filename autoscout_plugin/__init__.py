"""AutoScout: finds the fastest system configuration for a PyTorch job.

Importing this package loads no framework (torch, lightning, transformers); integrations load
theirs when used: `from autoscout_plugin import AutoScoutCallback` imports Lightning only when the
name is first touched, `tune_trainer` imports transformers likewise, and `tune_inference` imports
torch (and transformers for causal LMs) likewise.
`knob`, `step` and `launch_spec` (custom training loops under `autoscout launch --autoscout`) import
no framework at all.
"""

from __future__ import annotations

from typing import Any

from .loop import knob, launch_spec, step
from .options import AutoScoutOptions
from .serving import InferenceOptions, RequestMix
from .space import Space, SpaceError

__version__ = "0.1.0"
__all__ = ["AutoScoutCallback", "AutoScoutOptions", "AutoScoutSampler", "InferenceOptions", "RequestMix", "Space",
           "SpaceError", "apply_inference", "knob", "launch_spec", "step", "tune_inference", "tune_trainer",
           "__version__"]

_LAZY = {"AutoScoutCallback": "autoscout_plugin.integrations.lightning",
         "AutoScoutSampler": "autoscout_plugin.integrations.optuna",
         "tune_inference": "autoscout_plugin.integrations.inference",
         "tune_trainer": "autoscout_plugin.integrations.transformers",
         "apply_inference": "autoscout_plugin.integrations.inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autoscout_plugin' has no attribute {name!r}")
