"""AutoScout: finds the fastest system configuration for a PyTorch job.

Importing this package loads no framework (torch, lightning, transformers); integrations load
theirs when used.
"""

from __future__ import annotations

from .space import Space, SpaceError

__version__ = "0.1.0"
__all__ = ["Space", "SpaceError", "__version__"]
