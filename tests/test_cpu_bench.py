"""CPU micro-benchmarks: a real (short) measurement, the per-machine cache, the map to `Efficiency`,
the `autoscout cpu` command, and that importing the module loads no torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from autoscout_plugin import cli
from autoscout_plugin.costmodel import CpuSpeeds, Efficiency, cpu_bench, detect_cpu, efficiency_from_speeds
from autoscout_plugin.costmodel.cpu_bench import cpu_fingerprint, cpu_speeds, default_thread_counts, measure_cpu

torch = pytest.importorskip("torch")


def _speeds(**overrides) -> CpuSpeeds:
    base = CpuSpeeds(gemm_flops_per_s={1: 40e9, 2: 72e9}, bf16_gemm_speedup=0.5, mem_bytes_per_s=10e9,
                     fingerprint=cpu_fingerprint(), measured_s=2.0, backend="torch")
    return replace(base, **overrides)


# ------------------------------------------------------------------------------------ real measurement
@pytest.fixture(scope="module")
def measured() -> tuple[CpuSpeeds, float]:
    t0 = time.perf_counter()
    speeds = measure_cpu(max_seconds=3.0)
    return speeds, time.perf_counter() - t0


def _positive_finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_measure_cpu_gives_positive_rates_quickly(measured):
    speeds, wall_s = measured
    assert wall_s < 10.0
    assert 0 < speeds.measured_s <= wall_s
    assert sorted(speeds.gemm_flops_per_s) == default_thread_counts(detect_cpu().cores)
    # Rates only within generous physical bounds: the machine is shared and noisy.
    assert all(_positive_finite(r) and 1e8 < r < 1e14 for r in speeds.gemm_flops_per_s.values())
    assert _positive_finite(speeds.bf16_gemm_speedup) and 1e-4 < speeds.bf16_gemm_speedup < 100
    assert _positive_finite(speeds.mem_bytes_per_s) and 1e8 < speeds.mem_bytes_per_s < 1e13
    assert speeds.backend == "torch"
    assert speeds.fingerprint == cpu_fingerprint()


def test_a_small_budget_is_kept():
    t0 = time.perf_counter()
    speeds = measure_cpu(max_seconds=0.5, threads=[1])
    assert time.perf_counter() - t0 < 3.0
    assert list(speeds.gemm_flops_per_s) == [1]


def test_numpy_backend_has_no_bf16_figure():
    speeds = measure_cpu(max_seconds=0.5, threads=[1], backend="numpy", gemm_size=256, mem_mb=16)
    assert speeds.backend == "numpy" and speeds.bf16_gemm_speedup is None
    assert _positive_finite(speeds.gemm_flops_per_s[1]) and _positive_finite(speeds.mem_bytes_per_s)


def test_torch_threads_and_random_state_are_restored(monkeypatch):
    before_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        rng = torch.get_rng_state()
        measure_cpu(max_seconds=0.5, threads=[1, 2], gemm_size=256, mem_mb=16)
        assert torch.get_num_threads() == 1
        assert torch.equal(torch.get_rng_state(), rng)

        class Boom(Exception):
            pass

        def explode(*args, **kwargs):
            assert torch.get_num_threads() == 2  # inside a point: the thread count under test
            raise Boom

        monkeypatch.setattr(cpu_bench, "_best_times", explode)
        with pytest.raises(Boom):
            measure_cpu(max_seconds=0.5, threads=[2])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before_threads)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="max_seconds"):
        measure_cpu(max_seconds=0)
    with pytest.raises(ValueError, match="thread counts"):
        measure_cpu(max_seconds=1, threads=[0])


def test_default_thread_counts():
    assert default_thread_counts(1) == [1]
    assert default_thread_counts(2) == [1, 2]
    assert default_thread_counts(8) == [1, 2, 4, 8]
    assert default_thread_counts(12) == [1, 2, 4, 8, 12]


# ------------------------------------------------------------------------------------ record
def test_json_round_trip_and_validation():
    s = _speeds(bf16_gemm_speedup=None)
    assert CpuSpeeds.from_json(json.loads(json.dumps(s.to_json()))) == s
    with pytest.raises(ValueError):
        CpuSpeeds.from_json({**s.to_json(), "schema": 999})
    with pytest.raises(ValueError):
        CpuSpeeds.from_json({**s.to_json(), "gemm_flops_per_s": {"1": -5.0}})
    with pytest.raises(ValueError):
        CpuSpeeds.from_json({k: v for k, v in s.to_json().items() if k != "mem_bytes_per_s"})
    with pytest.raises(ValueError):
        _speeds(mem_bytes_per_s=float("nan"))
    with pytest.raises(ValueError):
        _speeds(gemm_flops_per_s={})


def test_fingerprint_includes_the_torch_version(monkeypatch):
    fp = cpu_fingerprint()
    assert fp == cpu_fingerprint() and len(fp) == 16
    monkeypatch.setattr(cpu_bench, "_torch_version", lambda: "0.0.1")
    assert cpu_fingerprint() != fp


# ------------------------------------------------------------------------------------ cache
@pytest.fixture
def fake_measure(monkeypatch):
    calls = []

    def fake(max_seconds=8.0, threads=None, **kwargs):
        calls.append(max_seconds)
        return _speeds(measured_s=float(len(calls)))

    monkeypatch.setattr(cpu_bench, "measure_cpu", fake)
    return calls


def _no_measure(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("measured although cached")

    monkeypatch.setattr(cpu_bench, "measure_cpu", refuse)


def test_second_call_reads_the_cache(tmp_path, fake_measure, monkeypatch):
    first = cpu_speeds(tmp_path)
    assert len(fake_measure) == 1
    path = tmp_path / f"cpu_{cpu_fingerprint()}.json"
    assert CpuSpeeds.from_json(json.loads(path.read_text())) == first
    _no_measure(monkeypatch)
    assert cpu_speeds(tmp_path) == first


@pytest.mark.parametrize("content", ["{not json", "", "[1, 2]", '{"schema": 1}', "null"])
def test_a_corrupt_cache_file_is_measured_again(tmp_path, fake_measure, content):
    path = tmp_path / f"cpu_{cpu_fingerprint()}.json"
    path.write_text(content)
    speeds = cpu_speeds(tmp_path)
    assert len(fake_measure) == 1
    assert CpuSpeeds.from_json(json.loads(path.read_text())) == speeds


def test_a_record_of_another_machine_is_measured_again(tmp_path, fake_measure):
    path = tmp_path / f"cpu_{cpu_fingerprint()}.json"
    path.write_text(json.dumps(_speeds(fingerprint="someothermachine").to_json()))
    assert cpu_speeds(tmp_path).fingerprint == cpu_fingerprint()
    assert len(fake_measure) == 1


def test_refresh_measures_again(tmp_path, fake_measure):
    cpu_speeds(tmp_path)
    again = cpu_speeds(tmp_path, refresh=True)
    assert len(fake_measure) == 2 and again.measured_s == 2.0
    assert cpu_speeds(tmp_path) == again  # the refreshed record replaced the old one


def test_default_cache_dir_follows_the_environment(tmp_path, fake_measure, monkeypatch):
    monkeypatch.setenv("AUTOSCOUT_CACHE", str(tmp_path / "c"))
    cpu_speeds()
    assert (tmp_path / "c" / f"cpu_{cpu_fingerprint()}.json").is_file()
    monkeypatch.delenv("AUTOSCOUT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cpu_bench.default_cache_dir() == tmp_path / "x" / "autoscout"


def test_an_unwritable_cache_still_answers(tmp_path, fake_measure):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cpu_speeds(blocker / "sub").gemm_flops_per_s[1] == 40e9  # mkdir under a file fails
    assert len(fake_measure) == 1


def test_real_measurement_is_cached(tmp_path, monkeypatch):
    first = cpu_speeds(tmp_path, max_seconds=1.0)
    _no_measure(monkeypatch)
    assert cpu_speeds(tmp_path) == first


# ------------------------------------------------------------------------------------ to Efficiency
def test_efficiency_from_two_points_by_hand():
    e = efficiency_from_speeds(_speeds(), cores=2)
    assert e.flops_per_core == 40e9
    assert e.thread_exponent == pytest.approx(math.log2(1.8))  # 72/40 = 1.8 from 2x the threads
    assert e.bf16_matmul_speedup == e.bf16_emulated_speedup == 0.5
    assert e.mem_bytes_per_s == 10e9
    defaults = Efficiency()
    assert e.matmul_fraction == defaults.matmul_fraction and e.link_bytes_per_s == defaults.link_bytes_per_s
    assert e.memory_exponent == defaults.memory_exponent


def test_efficiency_least_squares_through_the_one_thread_point():
    s = _speeds(gemm_flops_per_s={1: 40e9, 2: 72e9, 4: 120e9})
    # slope = sum(ln t * ln(r_t/r_1)) / sum(ln t ^ 2) = (ln2 ln1.8 + 2ln2 ln3) / (5 ln2^2)
    expected = (math.log(1.8) + 2 * math.log(3)) / (5 * math.log(2))
    assert efficiency_from_speeds(s).thread_exponent == pytest.approx(expected)
    assert efficiency_from_speeds(s, cores=2).thread_exponent == pytest.approx(math.log2(1.8))


def test_efficiency_without_a_one_thread_point_extrapolates():
    e = efficiency_from_speeds(_speeds(gemm_flops_per_s={2: 60e9, 4: 120e9}))
    assert e.thread_exponent == pytest.approx(1.0)
    assert e.flops_per_core == pytest.approx(30e9)
    single = efficiency_from_speeds(_speeds(gemm_flops_per_s={4: 80e9}))  # prior exponent kept
    assert single.thread_exponent == Efficiency().thread_exponent
    assert single.flops_per_core == pytest.approx(80e9 / 4**Efficiency().thread_exponent)


def test_efficiency_exponent_is_clipped_and_defaults_kept():
    assert efficiency_from_speeds(_speeds(gemm_flops_per_s={1: 40e9, 2: 30e9})).thread_exponent == 0.0
    assert efficiency_from_speeds(_speeds(gemm_flops_per_s={1: 40e9, 2: 100e9})).thread_exponent == 1.0
    base = Efficiency(bf16_matmul_speedup=1.7, bf16_emulated_speedup=0.4, link_bytes_per_s=1e9)
    e = efficiency_from_speeds(_speeds(bf16_gemm_speedup=None), base=base)
    assert (e.bf16_matmul_speedup, e.bf16_emulated_speedup, e.link_bytes_per_s) == (1.7, 0.4, 1e9)


def test_measured_speeds_map_to_a_usable_efficiency(measured):
    speeds, _ = measured
    e = efficiency_from_speeds(speeds, cores=detect_cpu().cores)
    assert e.flops_per_core == speeds.gemm_flops_per_s[1]
    assert 0.0 <= e.thread_exponent <= 1.0


# ------------------------------------------------------------------------------------ cli
def test_cli_cpu_prints_json_and_caches(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOSCOUT_CACHE", str(tmp_path))
    real = cpu_bench.measure_cpu
    monkeypatch.setattr(cpu_bench, "measure_cpu", lambda max_seconds=8.0, **kw: real(1.0, **kw))
    assert cli.main(["cpu", "--json"]) == 0
    speeds = CpuSpeeds.from_json(json.loads(capsys.readouterr().out))
    assert speeds.fingerprint == cpu_fingerprint() and speeds.gemm_flops_per_s[1] > 0
    cached = tmp_path / f"cpu_{speeds.fingerprint}.json"
    assert CpuSpeeds.from_json(json.loads(cached.read_text())) == speeds

    _no_measure(monkeypatch)
    assert cli.main(["cpu"]) == 0
    out = capsys.readouterr().out
    assert "GFLOP/s" in out and "GB/s" in out and speeds.fingerprint in out


# ------------------------------------------------------------------------------------ imports
def test_importing_cpu_bench_loads_no_torch():
    code = ("import sys, autoscout_plugin.costmodel.cpu_bench as cb, autoscout_plugin.cli\n"
            "cb.cpu_fingerprint()\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------ the live tuner's prior
def test_measured_efficiency_feeds_the_live_cost_model(tmp_path, fake_measure, monkeypatch):
    from autoscout_plugin.costmodel import Hardware, measured_efficiency

    monkeypatch.setenv("AUTOSCOUT_CACHE", str(tmp_path))
    eff = measured_efficiency(Hardware(kind="cpu", cores=2))
    assert eff is not None and eff.flops_per_core == 40e9 and eff.bf16_emulated_speedup == 0.5
    assert len(fake_measure) == 1
    assert measured_efficiency(Hardware(kind="cpu", cores=2)) == eff and len(fake_measure) == 1  # cached
    assert measured_efficiency(Hardware(kind="gpu", cores=2, gpus=1)) is None
    monkeypatch.setenv("AUTOSCOUT_CPU_BENCH", "0")
    assert measured_efficiency(Hardware(kind="cpu", cores=2)) is None


def test_a_failed_measurement_warns_and_keeps_the_priors(tmp_path, monkeypatch):
    from autoscout_plugin.costmodel import Hardware, measured_efficiency

    def broken(*args, **kwargs):
        raise RuntimeError("no timer")

    monkeypatch.setenv("AUTOSCOUT_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_bench, "measure_cpu", broken)
    with pytest.warns(RuntimeWarning, match="could not measure this CPU .*no timer"):
        assert measured_efficiency(Hardware(kind="cpu", cores=2)) is None


def test_the_tuner_builds_its_cost_model_from_the_measured_factors():
    from autoscout_plugin.costmodel import Hardware, Workload
    from autoscout_plugin.profiling import TrialOutcome
    from autoscout_plugin.space.builder import build_space
    from autoscout_plugin.tuner import TuneOptions, Tuner

    workload = Workload(family="transformer", n_layer=2, d_model=64, n_head=2, vocab=1000, seq_len=32, global_batch=8)
    hardware = Hardware(kind="cpu", cores=2)
    space = build_space(workload.to_json(), hardware.to_json(), strategies=("single",))
    eff = efficiency_from_speeds(_speeds(bf16_gemm_speedup=0.02), cores=2)
    tuner = Tuner(space, lambda c, f: TrialOutcome(value=1.0, cost_s=0.1), TuneOptions(max_trials=1),
                  workload=workload, hardware=hardware, efficiency=eff)
    f0 = tuner.search.f0
    assert f0 is not None and f0.base.eff.bf16_emulated_speedup == 0.02
