"""The launcher's model for `benchmarks/e2e_net.py`: a custom PyTorch loop with `Accelerator` over the minGRU
recurrent LM of `benchmarks.workloads` (global batch 32, synthetic tokens, random weights), run as a user runs
it with `accelerate launch`, and as AutoScout tunes it with `autoscout launch --autoscout`.

    accelerate launch benchmarks/net_launch_script.py --steps 500 --summary-out run.json
    python -m autoscout_plugin.cli launch --autoscout --autoscout-steps 500 benchmarks/net_launch_script.py --steps 500

It reads its system settings with `autoscout_plugin.knob()` (micro-batch size, gradient accumulation, dataloader
workers; `--micro/--accum/--workers` are the defaults) and marks each optimizer step with `autoscout_plugin.step()`,
which ends a launcher trial. In the real run (no launcher, or mode `apply`) it stops after `--window` seconds of
steps, or at `--steps`, and rank 0 writes the wall-clock time of each step to `--summary-out`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks`, when run as a file

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import autoscout_plugin as autoscout  # noqa: E402
from benchmarks.e2e_net import StepLog  # noqa: E402
from benchmarks.workloads import build  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="recurrent", help="a CPU workload of benchmarks.workloads")
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps of the job")
    parser.add_argument("--micro", type=int, default=None, help="micro-batch per process (default: the global batch)")
    parser.add_argument("--accum", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--workers", type=int, default=0, help="dataloader workers")
    parser.add_argument("--window", type=float, default=40.0, help="stop after this many seconds of steps")
    parser.add_argument("--warm", type=int, default=3, help="steps before the window may end")
    parser.add_argument("--summary-out", default=None, help="rank 0 writes the step times here (not in a trial)")
    args = parser.parse_args(argv)

    work = build(args.workload)
    micro = autoscout.knob("micro_batch_size", args.micro or work.spec.global_batch)
    accum = autoscout.knob("grad_accum", args.accum)
    workers = autoscout.knob("num_workers", args.workers)
    accelerator = Accelerator(gradient_accumulation_steps=accum)
    data = work.make_batch(64 * work.spec.global_batch, 0)
    keys = sorted(data)
    loader = DataLoader(TensorDataset(*(data[k] for k in keys)), batch_size=micro, shuffle=True, num_workers=workers,
                        drop_last=True)
    optimizer = torch.optim.AdamW(work.model.parameters(), lr=1e-4)
    model, optimizer, loader = accelerator.prepare(work.model, optimizer, loader)

    log = StepLog(args.window, args.warm, args.summary_out)
    steps, done = 0, False
    while not done:
        for tensors in loader:
            with accelerator.accumulate(model):
                loss = work.loss_fn(model, dict(zip(keys, tensors)))
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:  # one optimizer step done
                steps += 1
                autoscout.step(loss=loss.item())  # in a launcher trial: timed, and the trial ends here
                done = log.step() or steps >= args.steps
                if done:
                    break
    dynamo = getattr(accelerator.state, "dynamo_plugin", None)
    log.write(accelerator.is_main_process, effective={
        "procs": accelerator.num_processes, "threads": torch.get_num_threads(), "micro": micro, "accum": accum,
        "workers": workers, "precision": accelerator.mixed_precision,
        "compile": str(getattr(dynamo, "backend", "no")).lower().replace("dynamobackend.", "")})
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
