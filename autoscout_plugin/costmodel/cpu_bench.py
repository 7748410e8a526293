"""On-the-spot CPU calibration: short micro-benchmarks that set the cost model's CPU factors.

`measure_cpu` times a few GEMMs (fp32 at each thread count, bf16 against fp32 at full threads) and a
large array copy, in a few seconds; `cpu_speeds` caches the result per machine fingerprint so a
machine is measured once; `efficiency_from_speeds` turns the rates into `Efficiency` fields.

Timing follows the `timeit` convention: each point repeats its kernel for a short budget and keeps
the fastest call, the least noisy estimate of what the machine can do (a busy machine still reads
slow: these are the speeds seen now, not a datasheet).

Torch is imported only inside `measure_cpu` (numpy stands in where torch is absent), so importing
this module loads no framework.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .hardware import detect_cpu
from .model import Efficiency

SCHEMA = 1
"""Version of the cache file's layout; a file of another version is re-measured."""
GEMM_SIZE = 1024
"""Side of the square fp32 GEMMs (2 GFLOP a call: ~30 ms on one modern core)."""
POINT_S = 0.3
"""Seconds spent timing one point (a thread count, a precision, the copy) at most."""
MEM_MB = 128.0
"""Size of each buffer of the copy benchmark, far beyond the caches."""

Backend = Literal["torch", "numpy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuSpeeds:
    """Measured CPU rates of one machine.

    Example:
        >>> s = CpuSpeeds(gemm_flops_per_s={1: 40e9, 2: 72e9}, bf16_gemm_speedup=0.5, mem_bytes_per_s=10e9,
        ...               fingerprint="0123abcd", measured_s=2.5, backend="torch")
        >>> CpuSpeeds.from_json(json.loads(json.dumps(s.to_json()))) == s
        True
    """

    gemm_flops_per_s: dict[int, float]
    """Sustained fp32 GEMM FLOP/s by thread count."""
    bf16_gemm_speedup: float | None
    """bf16 over fp32 GEMM throughput at the most threads measured; None where unmeasurable (numpy)."""
    mem_bytes_per_s: float
    """Copy bandwidth, bytes read plus bytes written per second (STREAM's convention)."""
    fingerprint: str
    """`cpu_fingerprint()` of the machine measured."""
    measured_s: float
    """Wall-clock seconds the measurement took (imports included)."""
    backend: Backend
    """The library whose kernels were timed."""

    def __post_init__(self) -> None:
        if not self.gemm_flops_per_s:
            raise ValueError("gemm_flops_per_s needs at least one thread count")
        for threads, rate in self.gemm_flops_per_s.items():
            if not isinstance(threads, int) or threads < 1:
                raise ValueError(f"thread counts must be integers >= 1, got {threads!r}")
            _check_rate(f"gemm_flops_per_s[{threads}]", rate)
        if self.bf16_gemm_speedup is not None:
            _check_rate("bf16_gemm_speedup", self.bf16_gemm_speedup)
        _check_rate("mem_bytes_per_s", self.mem_bytes_per_s)
        if self.backend not in ("torch", "numpy"):
            raise ValueError(f"backend must be 'torch' or 'numpy', got {self.backend!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "gemm_flops_per_s": {str(t): r for t, r in sorted(self.gemm_flops_per_s.items())},
            "bf16_gemm_speedup": self.bf16_gemm_speedup,
            "mem_bytes_per_s": self.mem_bytes_per_s,
            "fingerprint": self.fingerprint,
            "measured_s": self.measured_s,
            "backend": self.backend,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CpuSpeeds:
        """The inverse of `to_json`; ValueError on anything malformed or of another schema."""
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            raise ValueError(f"not a CpuSpeeds record of schema {SCHEMA}")
        try:
            bf16 = data["bf16_gemm_speedup"]
            return cls(
                gemm_flops_per_s={int(t): float(r) for t, r in dict(data["gemm_flops_per_s"]).items()},
                bf16_gemm_speedup=None if bf16 is None else float(bf16),
                mem_bytes_per_s=float(data["mem_bytes_per_s"]),
                fingerprint=str(data["fingerprint"]),
                measured_s=float(data["measured_s"]),
                backend=data["backend"],
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed CpuSpeeds record: {exc!r}") from exc


def _check_rate(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


# ------------------------------------------------------------------------------------ fingerprint
def _torch_version() -> str | None:
    """The installed torch's version, read from its metadata (torch itself is not imported)."""
    if importlib.util.find_spec("torch") is None:
        return None
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "unknown"


def cpu_fingerprint() -> str:
    """A short stable id of this machine and its kernels: `detect_cpu().fingerprint()` and the torch
    version (a new torch brings new GEMM kernels, so it is measured afresh)."""
    text = f"{detect_cpu().fingerprint()}|torch={_torch_version()}|schema={SCHEMA}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ measurement
def default_thread_counts(cores: int) -> list[int]:
    """Powers of two below `cores`, and `cores`: `[1, 2, 4, 6]` for 6 cores.

    Example:
        >>> default_thread_counts(6), default_thread_counts(1)
        ([1, 2, 4, 6], [1])
    """
    counts, t = [], 1
    while t < cores:
        counts.append(t)
        t *= 2
    return [*counts, max(cores, 1)]


def _best_times(fns: Sequence[Callable[[], object]], budget_s: float, deadline: float,
                min_rounds: int = 3) -> list[float]:
    """Seconds of the fastest call of each of `fns`, called in turn (so that a burst of load from
    elsewhere hits them alike) after one warm-up call each (first-touch pages, kernel choice, thread
    pool spin-up). Rounds repeat for `budget_s`, and at least `min_rounds` times unless that would
    run past twice the budget; never a round past `deadline` once each has a time."""
    start = time.perf_counter()
    for fn in fns:
        fn()
    best = [math.inf] * len(fns)
    rounds = 0
    while True:
        now = time.perf_counter()
        if rounds:
            elapsed, round_s = now - start, sum(best)
            if elapsed >= budget_s and (rounds >= min_rounds or elapsed + round_s > 2 * budget_s):
                break
            if now + round_s > deadline:
                break
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
        rounds += 1
    return best


class _TorchKit:
    name: Backend = "torch"

    def __init__(self) -> None:
        import torch  # lazy: the core package must not import torch at import time

        self.torch = torch
        self.gen = torch.Generator().manual_seed(0)  # a private generator: the global RNG is untouched

    @contextlib.contextmanager
    def threads(self, n: int) -> Iterator[None]:
        before = self.torch.get_num_threads()
        self.torch.set_num_threads(n)
        try:
            yield
        finally:
            self.torch.set_num_threads(before)

    def gemm(self, n: int, dtype: str) -> Callable[[], object]:
        torch = self.torch
        dt = torch.bfloat16 if dtype == "bf16" else torch.float32
        a = torch.randn(n, n, generator=self.gen).to(dt)
        b = torch.randn(n, n, generator=self.gen).to(dt)
        out = torch.empty(n, n, dtype=dt)
        return lambda: torch.mm(a, b, out=out)

    def copy(self, nbytes: int) -> tuple[Callable[[], object], int]:
        src = self.torch.ones(max(nbytes // 4, 1), dtype=self.torch.float32)
        dst = self.torch.empty_like(src)
        return (lambda: dst.copy_(src)), 2 * src.numel() * 4


class _NumpyKit:
    name: Backend = "numpy"

    def __init__(self) -> None:
        import numpy as np

        self.np = np
        self.rng = np.random.default_rng(0)  # a private generator: the global RNG is untouched
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # BLAS threads cannot be set: measure at whatever it uses
            threadpool_limits = None
        self._limits = threadpool_limits

    @property
    def controls_threads(self) -> bool:
        return self._limits is not None

    def threads(self, n: int) -> contextlib.AbstractContextManager[Any]:
        if self._limits is None:
            return contextlib.nullcontext()
        return self._limits(limits=n, user_api="blas")

    def gemm(self, n: int, dtype: str) -> Callable[[], object]:
        np = self.np
        a = self.rng.standard_normal((n, n), dtype=np.float32)
        b = self.rng.standard_normal((n, n), dtype=np.float32)
        out = np.empty((n, n), dtype=np.float32)
        return lambda: np.matmul(a, b, out=out)

    def copy(self, nbytes: int) -> tuple[Callable[[], object], int]:
        np = self.np
        src = np.ones(max(nbytes // 4, 1), dtype=np.float32)
        dst = np.empty_like(src)
        return (lambda: np.copyto(dst, src)), 2 * src.nbytes


def _bf16_size(kit: _TorchKit, limit: int, point_s: float) -> int:
    """The smallest power-of-two side from 128 (at most `limit`) whose bf16 GEMM takes point_s/20:
    long enough to time, short enough to repeat. bf16 runs 0.01x-3x fp32 by CPU (0.02x without
    avx512_bf16 here), so a fixed size would either take seconds or time mostly overhead."""
    n = 128
    while n < limit:
        fn = kit.gemm(n, "bf16")
        fn()
        t0 = time.perf_counter()
        fn()
        if time.perf_counter() - t0 >= point_s / 20:
            break
        n *= 2
    return min(n, limit)


def measure_cpu(max_seconds: float = 8.0, threads: Sequence[int] | None = None, *,
                backend: Backend | None = None, gemm_size: int = GEMM_SIZE, mem_mb: float = MEM_MB) -> CpuSpeeds:
    """Time this CPU's GEMMs and memory in at most about `max_seconds` (2-3 s on a 2-core machine).

    `threads` defaults to `default_thread_counts(cores)`; `backend` to torch where it is installed,
    else numpy (no bf16 figure, and thread counts only with threadpoolctl). Torch's thread count and
    random state are left as they were.
    """
    start = time.perf_counter()
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    hardware = detect_cpu()
    counts = sorted(set(threads)) if threads else default_thread_counts(hardware.cores)
    if any(not isinstance(t, int) or t < 1 for t in counts):
        raise ValueError(f"thread counts must be integers >= 1, got {list(counts)}")
    if backend is None:
        backend = "torch" if importlib.util.find_spec("torch") is not None else "numpy"
    kit: _TorchKit | _NumpyKit = _TorchKit() if backend == "torch" else _NumpyKit()
    if isinstance(kit, _NumpyKit) and not kit.controls_threads:
        counts = [hardware.cores]  # one point, at the BLAS's own thread count
    full = max(counts)
    deadline = start + max_seconds
    # Each point gets an equal share of what is left (fp32 per thread count, bf16 sizing, fp32 and
    # bf16 in turn at that size as two, the copy), capped at POINT_S; 20% is kept for warm-ups.
    points = len(counts) + (3 if isinstance(kit, _TorchKit) else 0) + 1
    point_s = min(POINT_S, 0.8 * max(deadline - time.perf_counter(), 0.0) / points)

    gemm: dict[int, float] = {}
    for t in counts:
        with kit.threads(t):
            (seconds,) = _best_times([kit.gemm(gemm_size, "fp32")], point_s, deadline)
            gemm[t] = 2.0 * gemm_size**3 / seconds

    bf16: float | None = None
    if isinstance(kit, _TorchKit):
        with kit.threads(full):
            try:
                n = _bf16_size(kit, gemm_size, point_s)
                t_fp32, t_bf16 = _best_times([kit.gemm(n, "fp32"), kit.gemm(n, "bf16")], 2 * point_s, deadline)
                bf16 = t_fp32 / t_bf16
            except (RuntimeError, TypeError):  # a build without bf16 matmuls
                bf16 = None

    nbytes = int(min(mem_mb * 1e6, hardware.mem_gb * 1e9 / 16))
    with kit.threads(full):
        copy, moved = kit.copy(nbytes)
        (seconds,) = _best_times([copy], point_s, deadline)
        mem = moved / seconds
        del copy

    return CpuSpeeds(gemm_flops_per_s=gemm, bf16_gemm_speedup=bf16, mem_bytes_per_s=mem,
                     fingerprint=cpu_fingerprint(), measured_s=time.perf_counter() - start, backend=kit.name)


# ------------------------------------------------------------------------------------ cache
def default_cache_dir() -> Path:
    """`$AUTOSCOUT_CACHE`, else `$XDG_CACHE_HOME/autoscout` (`~/.cache/autoscout`)."""
    if os.environ.get("AUTOSCOUT_CACHE"):
        return Path(os.environ["AUTOSCOUT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autoscout"


def cpu_speeds(cache_dir: str | os.PathLike[str] | None = None, refresh: bool = False,
               max_seconds: float = 8.0) -> CpuSpeeds:
    """This machine's `CpuSpeeds`, from `cache_dir/cpu_<fingerprint>.json` when there, else measured
    (and cached). A missing, corrupt or foreign file, or `refresh`, means a new measurement; a cache
    that cannot be written only costs the next call a measurement."""
    fingerprint = cpu_fingerprint()
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"cpu_{fingerprint}.json"
    if not refresh:
        try:
            cached = CpuSpeeds.from_json(json.loads(path.read_text(encoding="utf-8")))
            if cached.fingerprint == fingerprint:
                return cached
        except (OSError, ValueError):  # absent, unreadable, not JSON, malformed (JSONDecodeError is a ValueError)
            pass
    speeds = measure_cpu(max_seconds)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(speeds.to_json(), indent=1), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        pass
    return speeds


# ------------------------------------------------------------------------------------ to the model
def efficiency_from_speeds(speeds: CpuSpeeds, cores: int | None = None, base: Efficiency | None = None) -> Efficiency:
    """`base` (default `Efficiency()`) with the measured factors in place.

    - `flops_per_core`: the 1-thread fp32 GEMM rate;
    - `thread_exponent`: the slope of log rate against log threads through the 1-thread point
      (the model's `flops_per_core * t**thread_exponent`), clipped to [0, 1], over the points with at
      most `cores` threads (all of them when `cores` is None);
    - `bf16_matmul_speedup` and `bf16_emulated_speedup`: both the measured bf16/fp32 ratio (the model
      reads the one matching `Hardware.bf16`; this machine's ratio is whichever it is), kept when unmeasured;
    - `mem_bytes_per_s`: the copy bandwidth.

    Example (1 thread 40 GFLOP/s, 2 threads 72: 1.8x from 2x threads, so the exponent is log2 1.8):
        >>> s = CpuSpeeds(gemm_flops_per_s={1: 40e9, 2: 72e9}, bf16_gemm_speedup=0.5, mem_bytes_per_s=10e9,
        ...               fingerprint="0123abcd", measured_s=2.5, backend="torch")
        >>> e = efficiency_from_speeds(s, cores=2)
        >>> e.flops_per_core, round(e.thread_exponent, 4), e.bf16_emulated_speedup, e.mem_bytes_per_s
        (40000000000.0, 0.848, 0.5, 10000000000.0)
    """
    eff = base if base is not None else Efficiency()
    points = {t: r for t, r in speeds.gemm_flops_per_s.items() if cores is None or t <= cores}
    if not points:  # every point above `cores`: use the smallest thread count measured
        t_min = min(speeds.gemm_flops_per_s)
        points = {t_min: speeds.gemm_flops_per_s[t_min]}
    lx = [math.log(t) for t in points]
    ly = [math.log(r) for r in points.values()]
    exponent = eff.thread_exponent
    if 1 in points:  # through the 1-thread point
        if len(points) >= 2:
            exponent = sum(x * (y - math.log(points[1])) for x, y in zip(lx, ly)) / sum(x * x for x in lx)
    elif len(points) >= 2:  # no 1-thread point: a free log-log line, its intercept is the 1-core rate
        mx = sum(lx) / len(lx)
        exponent = sum((x - mx) * y for x, y in zip(lx, ly)) / sum((x - mx) ** 2 for x in lx)
    exponent = min(max(exponent, 0.0), 1.0)
    # The 1-thread rate itself, else the line's intercept (the mean point, moved along the slope).
    per_core = points[1] if 1 in points else math.exp(sum(ly) / len(ly) - exponent * sum(lx) / len(lx))
    fields: dict[str, float] = {"flops_per_core": per_core, "thread_exponent": exponent,
                                "mem_bytes_per_s": speeds.mem_bytes_per_s}
    if speeds.bf16_gemm_speedup is not None:
        fields["bf16_matmul_speedup"] = fields["bf16_emulated_speedup"] = speeds.bf16_gemm_speedup
    return replace(eff, **fields)


def measured_efficiency(hardware: Any) -> Efficiency | None:
    """The cost model's factors for this machine from its cached (or, the first time, freshly measured)
    speeds, for a live tuning run on a CPU; None, with a warning, when measuring fails, and None on
    GPU machines or with `AUTOSCOUT_CPU_BENCH=0`: the model then keeps its priors, which calibration
    refits from the trials anyway."""
    if getattr(hardware, "kind", "cpu") != "cpu" or os.environ.get("AUTOSCOUT_CPU_BENCH", "1") == "0":
        return None
    try:
        return efficiency_from_speeds(cpu_speeds(), getattr(hardware, "cores", None))
    except Exception as exc:  # noqa: BLE001 - an aid to the search, never a reason to stop tuning
        warnings.warn(f"AutoScout could not measure this CPU ({type(exc).__name__}: {exc}); "
                      "the cost model keeps its default factors", RuntimeWarning, stacklevel=2)
        return None
