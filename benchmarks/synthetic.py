"""A synthetic ground-truth table: the cost model with perturbed, hidden efficiency factors plus noise.

    python -m benchmarks.synthetic --out /tmp/synth.csv --seed 3

For tests of the replay machinery and as a table no optimizer has seen. The hidden factors are drawn
far from the cost model's defaults (compile may hurt, bf16 may barely help, threads may not scale),
so a search that only trusted its prior would fail here.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
from dataclasses import replace
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_table(Path(args.out), args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
