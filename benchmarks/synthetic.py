"""Synthetic ground-truth tables, and failure scenarios to lay over any table.

    python -m benchmarks.synthetic --out /tmp/synth.csv --seed 3

A synthetic table is the cost model with perturbed, hidden efficiency factors plus noise: for tests of
the replay machinery and as a table no optimizer has seen. The hidden factors are drawn far from the
cost model's defaults (compile may hurt, bf16 may barely help, threads may not scale), so a search
that only trusted its prior would fail here.

A scenario (`SCENARIOS`) rewrites a table's rows as a machine with a fault would have measured them,
with the error text the real fault prints (each text below was produced on this machine):
- `bf16_fails`: bf16 is not supported here: every bf16 row fails at its first forward;
- `ddp_fails`: the distributed backend cannot start: every multi-process row fails;
- `oom_line`: out of memory above a micro-batch (the table's middle one), unless activation
  checkpointing halves the activations;
- `transient`: 10% of all trials fail on a port already in use, whatever their config (the replay
  draws these per trial; the tuner retries such a trial once).
`python -m benchmarks.replay --scenario NAME` applies one to the table it replays.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoscout_plugin.costmodel import CostModel, Efficiency, Hardware, Workload
from autoscout_plugin.space import Bool, Categorical, GlobalBatch, Implies, Int, MaxProduct, Space

COLUMNS = ["strategy", "num_processes", "precision", "compile", "activation_checkpointing", "micro_batch_size",
           "num_threads", "samples_per_s", "peak_rss_mb", "trial_wall_s", "status"]


def synthetic_space(global_batch: int) -> Space:
    return Space([
        Categorical(name="strategy", choices=("single", "ddp", "fsdp"), structural=True),
        Int(name="num_processes", choices=(1, 2), structural=True),
        Categorical(name="precision", choices=("32-true", "bf16-mixed"), structural=True),
        Categorical(name="compile", choices=("off", "default"), structural=True),
        Bool("activation_checkpointing", structural=True),
        Int(name="micro_batch_size", choices=(4, 8, 16), log=True),
        Int(name="num_threads", choices=(1, 2)),
    ], [GlobalBatch(global_batch), Implies("strategy", ("single",), "num_processes", (1,)),
        Implies("strategy", ("ddp", "fsdp"), "num_processes", (2,)),
        MaxProduct(("num_threads", "num_processes"), 2, "cores")])


def hidden_efficiency(rng: random.Random) -> Efficiency:
    base = Efficiency()
    return replace(
        base,
        flops_per_core=base.flops_per_core * math.exp(rng.gauss(0, 0.7)),
        thread_exponent=min(max(rng.gauss(0.75, 0.15), 0.3), 1.0),
        matmul_fraction=min(max(rng.gauss(0.6, 0.15), 0.2), 0.9),
        bf16_matmul_speedup=math.exp(rng.gauss(math.log(1.5), 0.35)),
        compile_elementwise_speedup=math.exp(rng.gauss(math.log(1.3), 0.5)),
        op_overhead_s=base.op_overhead_s * math.exp(rng.gauss(0, 1.0)),
        link_bytes_per_s=base.link_bytes_per_s * math.exp(rng.gauss(0, 0.8)),
    )


def make_table(out: Path, seed: int, noise: float = 0.05) -> Path:
    rng = random.Random(seed)
    workload = Workload(family="transformer", n_layer=rng.choice((2, 4)), d_model=rng.choice((128, 256)),
                        n_head=2, vocab=rng.choice((1024, 8192, 50257)), seq_len=rng.choice((64, 128)),
                        global_batch=32)
    hardware = Hardware(kind="cpu", cores=2, mem_gb=24, bf16=True)
    truth = CostModel(workload, hardware, hidden_efficiency(rng))
    space = synthetic_space(32)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for config in space.enumerate():
            est = truth.estimate(config)
            fails = config["strategy"] == "fsdp" and config["compile"] != "off" and rng.random() < 0.7
            compiled = config["compile"] != "off"
            row = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in config.items()}
            row.update(samples_per_s="" if fails else round(est.samples_per_s * math.exp(rng.gauss(0, noise)), 3),
                       peak_rss_mb=round(est.peak_mem_mb), status="error" if fails else "ok",
                       trial_wall_s=round(6 + 5 * est.step_s + (rng.uniform(10, 25) if compiled else 0), 1))
            writer.writerow(row)
    meta = {"workload": workload.to_json(), "hardware": hardware.to_json(), "metric": "samples_per_s",
            "direction": "max", "synthetic_seed": seed}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out


# ------------------------------------------------------------------------------- failure scenarios
# Real error texts, as `autoscout_plugin.failures.describe_exception` writes them, produced on this
# machine: an LSTM under bf16 autocast on a CPU without native bf16; `init_process_group("nccl")`
# without NCCL; a tensor larger than memory; a gloo rendezvous on a port another process holds.
BF16_ERROR = ("RuntimeError: could not create a primitive descriptor for the LSTM forward propagation primitive."
              " Run workload with environment variable ONEDNN_VERBOSE=all to get additional diagnostic information.")
DDP_ERROR = "RuntimeError: Distributed package doesn't have NCCL built in"
OOM_ERROR = ("RuntimeError: [enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate"
             " memory: you tried to allocate 2147483648 bytes. Error code 12 (Cannot allocate memory)")
TRANSIENT_ERROR = ("torch.distributed.DistNetworkError: The server socket has failed to listen on any local network"
                   " address. port: 29500, useIpv6: false, code: -98, name: EADDRINUSE, message: address already"
                   " in use")

Row = dict[str, Any]
"""A table row's results: `samples_per_s`, `status`, `trial_wall_s`, `peak_mem_mb`, `error`."""


@dataclass(frozen=True)
class Scenario:
    """A fault laid over a table: `rows` rewrites the rows, `transient_rate` fails trials at random."""

    name: str
    doc: str
    rows: Callable[[list[tuple[dict[str, Any], Row]]], list[Row]]
    transient_rate: float = 0.0
    failing: Callable[[dict[str, Any]], bool] | None = None
    """The setting that fails everywhere, for counting the trials spent on it."""


def _failed(row: Row, status: str, error: str, share: float) -> Row:
    """`row` failed `share` of the way into its trial (a failure at the first forward costs start-up only)."""
    return {**row, "status": status, "samples_per_s": math.nan, "error": error,
            "trial_wall_s": round(share * float(row.get("trial_wall_s") or 0.0), 2)}


def _bf16(config: Mapping[str, Any]) -> bool:
    return "bf16" in str(config.get("precision", ""))


def _multi_process(config: Mapping[str, Any]) -> bool:
    return int(config.get("num_processes", 1) or 1) > 1 or config.get("strategy", "single") != "single"


def _oom_line(rows: list[tuple[dict[str, Any], Row]]) -> list[Row]:
    sizes = sorted({int(c["micro_batch_size"]) for c, _ in rows if "micro_batch_size" in c})
    if len(sizes) < 2:
        return [r for _, r in rows]
    limit = statistics.median(sizes)
    out = []
    for config, row in rows:
        need = int(config.get("micro_batch_size", 0)) * (0.5 if config.get("activation_checkpointing") else 1.0)
        out.append(_failed(row, "oom", OOM_ERROR, 0.5) if need > limit else row)
    return out


SCENARIOS: dict[str, Scenario] = {
    "bf16_fails": Scenario(
        "bf16_fails", "bf16 is not supported on this machine: every bf16 row fails",
        lambda rows: [_failed(r, "error", BF16_ERROR, 0.3) if _bf16(c) else r for c, r in rows], failing=_bf16),
    "ddp_fails": Scenario(
        "ddp_fails", "the distributed backend cannot start: every multi-process row fails",
        lambda rows: [_failed(r, "error", DDP_ERROR, 0.3) if _multi_process(c) else r for c, r in rows],
        failing=_multi_process),
    "oom_line": Scenario("oom_line", "out of memory above the middle micro-batch (checkpointing halves the need)",
                         _oom_line),
    "transient": Scenario("transient", "10% of trials fail on a port in use, whatever their config",
                          lambda rows: [r for _, r in rows], transient_rate=0.1),
}


def apply_scenario(name: str, rows: list[tuple[dict[str, Any], Row]]) -> list[Row]:
    """The rows of a table as a machine with the fault `name` would have measured them."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {sorted(SCENARIOS)}")
    return SCENARIOS[name].rows(rows)


def transient_failure(row: Row) -> Row:
    """One trial of `row` lost to a port in use: it fails early, whatever its config."""
    return _failed(row, "error", TRANSIENT_ERROR, 0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_table(Path(args.out), args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
