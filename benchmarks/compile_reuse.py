"""What a `torch.compile` trial costs the second time: inductor's caches across trials (issue 21).

    python -m benchmarks.compile_reuse [--model gpt2] [--json OUT]

A trial of a compiled config pays its compile in its warm-up steps. The same graph compiled again can
reuse work at two levels, and AutoScout's trials meet both:
- in one process (Lightning's and Hugging Face's trials, then the main fit, in the user's process): dynamo
  traces the new module again, and inductor finds the compiled graph in its caches;
- in a new process (the launcher's trials, each a fresh process, and the real run after them): dynamo traces
  again, and inductor's on-disk FX-graph and AOTAutograd caches (`TORCHINDUCTOR_CACHE_DIR`, by default one
  folder per user under the temp dir, shared by every process of that user) skip code generation and the C++
  compile.

Each case runs a training step loop on a fresh copy of the model (random weights, synthetic tokens): the first
optimizer step (where the compile happens) and the median of the next 5 steps, in seconds. Cases, in order, each
a fresh process unless said:
1. `cold`: an empty cache folder, compile in fp32;
2. `same process`: in that process, a second copy of the model compiled again (fresh `torch.compile` call);
3. `new process, warm`: a new process on the same cache folder, fp32 (a launcher trial re-run, its real run);
4. `new process, bf16`: the same folder, bf16 autocast (another graph: what does not reuse);
5. `uncompiled`: the same steps without compile (what the compile wins per step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, statistics, sys, time, copy
import torch
from benchmarks.workloads import build

model_name, precision, compiled, twice = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
torch.set_num_threads(2)
work = build(model_name)
batch = work.make_batch(work.spec.global_batch, 0)

def loop(module):
    model = torch.compile(module) if compiled else module
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = work.loss_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {"first_s": times[0], "step_s": statistics.median(times[1:])}

out = [loop(copy.deepcopy(work.model))]
if twice:  # dynamo's state is kept, as between two trials of one process: the new module is traced anew
    out.append(loop(copy.deepcopy(work.model)))
print("RESULT " + json.dumps(out), flush=True)
'''


def _child(model: str, precision: str, compiled: bool, twice: bool,
           cache: Path) -> tuple[list[dict[str, float]], float]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    start = time.perf_counter()
    argv = [sys.executable, "-c", CHILD, model, precision, "1" if compiled else "0", "1" if twice else "0"]
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):]), wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gpt2")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="autoscout-compile-") as tmp:
        cache = Path(tmp) / "inductor"
        (first, second), wall = _child(args.model, "fp32", True, True, cache)
        rows += [{"case": "cold (empty cache), fp32", **first, "process_s": wall},
                 {"case": "same process, a second copy compiled", **second, "process_s": None}]
        (warm,), wall = _child(args.model, "fp32", True, False, cache)
        rows.append({"case": "new process, warm cache, fp32", **warm, "process_s": wall})
        (bf16,), wall = _child(args.model, "bf16", True, False, cache)
        rows.append({"case": "new process, same cache, bf16 (another graph)", **bf16, "process_s": wall})
        (plain,), wall = _child(args.model, "fp32", False, False, cache)
        rows.append({"case": "uncompiled, fp32", **plain, "process_s": wall})
    print(f"{'case':48s} {'first step s':>13s} {'steady step s':>14s} {'process s':>10s}")
    for row in rows:
        process = f"{row['process_s']:10.1f}" if row["process_s"] is not None else f"{'':>10s}"
        print(f"{row['case']:48s} {row['first_s']:13.2f} {row['step_s']:14.3f} {process}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "measured": time.strftime("%Y-%m-%d"),
                                               "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
