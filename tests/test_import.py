"""Importing the core must not load a framework or an optimizer library (docs/design.md: lazy imports)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "lightning", "pytorch_lightning", "transformers", "accelerate", "optuna", "skopt")

_PROBE = """
import json, sys
for name in {modules!r}:
    __import__(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def _loaded_after(modules: list[str]) -> list[str]:
    code = _PROBE.format(modules=modules, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "modules",
    [
        ["autoscout_plugin", "autoscout_plugin.search", "autoscout_plugin.tuner", "autoscout_plugin.loop"],
        ["autoscout_plugin.space", "autoscout_plugin.costmodel", "autoscout_plugin.profiling",
         "autoscout_plugin.store", "autoscout_plugin.report.result", "autoscout_plugin.trial"],
    ],
)
def test_core_imports_no_framework(modules: list[str]) -> None:
    assert _loaded_after(modules) == []


def test_probe_detects_a_heavy_import() -> None:
    """The probe itself can fail: importing a listed package directly is seen."""
    assert _loaded_after(["json", "skopt"]) != []
