"""The machine a job runs on: kind, core/device counts, memory, and what the chips support."""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class Hardware:
    """One node's hardware.

    Example:
        >>> Hardware(kind="cpu", cores=2, mem_gb=24, bf16=True).devices
        1
    """

    kind: Literal["cpu", "gpu"] = "cpu"
    """`cpu` (processes share the cores) or `gpu` (one process per device)."""
    cores: int = 1
    """Physical CPU cores usable by the job."""
    mem_gb: float = 8.0
    """Host memory (cpu) or memory per device (gpu)."""
    bf16: bool = False
    """Whether bfloat16 matmuls run natively (avx512_bf16 / AMX on CPU; Ampere+ GPUs)."""
    gpus: int = 0
    """Devices per node (gpu kind)."""
    name: str = "cpu"
    """A catalogue name (`h100-sxm`, ...) or the CPU model string."""

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ValueError(f"hardware cores must be >= 1, got {self.cores}")
        if self.kind == "gpu" and self.gpus < 1:
            raise ValueError(f"a gpu machine needs gpus >= 1, got {self.gpus}")

    @property
    def devices(self) -> int:
        return self.gpus if self.kind == "gpu" else 1

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hardware:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "cpu_model" in data and "name" not in data:
            kwargs["name"] = str(data["cpu_model"])
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        """A short stable id of this machine's description."""
        text = repr(sorted(self.to_json().items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpu_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "cpu", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("", "cpu", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return model, flags


def detect_cpu() -> Hardware:
    """This machine, as a CPU node (no framework imported)."""
    model, flags = _cpu_flags()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        mem_gb = 8.0
    bf16 = bool(flags & {"avx512_bf16", "amx_bf16"}) or platform.machine() in ("arm64", "aarch64")
    return Hardware(kind="cpu", cores=cores, mem_gb=round(mem_gb, 1), bf16=bf16, name=model)
