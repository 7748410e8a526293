"""A custom training loop with `Accelerator`, tunable by the launcher.

    accelerate launch examples/accelerate_loop.py --steps 200                      # as usual
    autoscout launch --autoscout examples/accelerate_loop.py --steps 200           # tuned first

A small MLP regression on synthetic data (random weights, nothing downloaded). The loop reads its
system settings with `autoscout_plugin.knob()` (micro-batch size, gradient accumulation, dataloader
workers) and marks each optimizer step with `autoscout_plugin.step()`; the launcher tunes those and
its own flags (processes, mixed precision, compile, threads). Micro-batch x accumulation x processes
keeps your global batch (`--micro-batch` x `--accum` x the processes you launch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import autoscout_plugin as autoscout


def build(width: int, depth: int, features: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(features, width), nn.GELU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4096, help="size of the synthetic data set")
    parser.add_argument("--micro-batch", type=int, default=16, help="your micro-batch size (per process)")
    parser.add_argument("--accum", type=int, default=1, help="your gradient accumulation steps")
    parser.add_argument("--out", help="write what this run used (world size, knobs, precision) to this JSON file")
    args = parser.parse_args(argv)

    micro_batch = autoscout.knob("micro_batch_size", args.micro_batch)
    accum = autoscout.knob("grad_accum", args.accum)
    workers = autoscout.knob("num_workers", 0)
    accelerator = Accelerator(gradient_accumulation_steps=accum)

    torch.manual_seed(0)
    inputs = torch.randn(args.samples, args.features)
    targets = inputs @ torch.randn(args.features, 1) + 0.1 * torch.randn(args.samples, 1)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=micro_batch, shuffle=True, num_workers=workers,
                        drop_last=True)
    model = build(args.width, args.depth, args.features)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    steps = 0
    while steps < args.steps:
        for x, y in loader:
            with accelerator.accumulate(model):
                loss = nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:  # one optimizer step done
                steps += 1
                autoscout.step(loss=loss.item())
                if steps >= args.steps:
                    break

    if args.out:
        rank = accelerator.process_index
        summary = {"world_size": accelerator.num_processes, "rank": rank, "micro_batch_size": micro_batch,
                   "grad_accum": accum, "num_workers": workers, "mixed_precision": accelerator.mixed_precision,
                   "threads": torch.get_num_threads(), "steps": steps, "argv": sys.argv[1:],
                   "launch": (autoscout.launch_spec() or {}).get("mode"), "final_loss": loss.item(),
                   "env_main_process_port": os.environ.get("MASTER_PORT")}
        path = Path(args.out if rank == 0 else f"{args.out}.rank{rank}")
        path.write_text(json.dumps(summary), encoding="utf-8")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
