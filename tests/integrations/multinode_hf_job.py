"""A Hugging Face Trainer job on two "nodes", for `test_multinode_frameworks.py`: each node's launch
(torchrun, or `accelerate launch --num_machines 2`) runs this script, which calls `tune_trainer` on a
small GPT-2 (threads and the micro-batch size) and trains 3 steps. Each rank writes what it ended up with
to `OUT/node{GROUP_RANK}.json`.

    python -m torch.distributed.run --nnodes 2 --node_rank R ... multinode_hf_job.py OUT [options]

`--fail-threads N`: on node 1 only, the model's forward raises while the process runs N threads (a trial
that fails on one node). The first forward of each rank writes `OUT/started{GROUP_RANK}`, and every
forward waits while `OUT/hold` exists (so a test can kill a node while both are inside a trial).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed
from autoscout_plugin.integrations.transformers import tune_trainer

from examples.hf_gpt2 import make_trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--fail-threads", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    node = os.environ["GROUP_RANK"]
    trainer = make_trainer(str(args.out / f"run{node}"), samples=128, steps=3, batch_size=8,
                           model={"n_layer": 1, "n_embd": 16, "n_head": 2, "vocab": 64, "seq_len": 8})
    started = []

    def forward(module: Any, inputs: Any, kwargs: Any) -> None:
        if not started:
            started.append(True)
            (args.out / f"started{node}").write_text(str(os.getpid()))
        if node == "1" and torch.get_num_threads() == args.fail_threads:
            raise RuntimeError(f"a crash on node 1 with {args.fail_threads} threads")
        while (args.out / "hold").exists():
            time.sleep(0.05)

    hook = trainer.model.transformer.register_forward_pre_hook(forward, with_kwargs=True)
    result = tune_trainer(trainer, include=["num_threads", "micro_batch_size"], max_trials=args.trials,
                          warmup_steps=1, measure_steps=2, patience=None, progress=False, parallel=args.parallel,
                          net_gain=False,
                          store=str(args.out / "store.sqlite"), report=str(args.out / "report"))
    hook.remove()
    steps = trainer.train().global_step
    seen = {"node": int(node), "rank": torch.distributed.get_rank(), "world": trainer.args.world_size,
            "applied": result.best_config, "threads": torch.get_num_threads(),
            "batch_size": trainer.args.per_device_train_batch_size,
            "accumulate": trainer.args.gradient_accumulation_steps, "steps": steps}
    (args.out / f"node{node}.json").write_text(json.dumps(seen, default=str))


if __name__ == "__main__":
    main()
    # As in the HF two-process tests: gloo's C++ teardown at interpreter exit sometimes aborts after the work is
    # done; what the tests check is written by now.
    os._exit(0)
