"""A Lightning job on two "nodes", for `test_multinode_frameworks.py`: each node's launch runs this
script under torchrun (`Trainer(num_nodes=2, devices=1, accelerator="cpu", strategy="ddp")`, gloo), with
`AutoScoutCallback` tuning threads and the micro-batch size. Each rank writes what it ended up with to
`OUT/node{GROUP_RANK}.json`.

    python -m torch.distributed.run --nnodes 2 --node_rank R ... multinode_lightning_job.py OUT [options]

`--fail-threads N`: on node 1 only, `training_step` raises while the process runs N threads (a trial
that fails on one node). The first training step of each rank writes `OUT/started{GROUP_RANK}`, and
every step waits while `OUT/hold` exists (so a test can kill a node while both are inside a trial).
After the tuned fit, the same fit runs again in the same job with the winner set by hand, and each rank
notes whether its weights came out bit for bit the same (`no_trace`: the trials ran in place on the
module, under DDP wrappers of their own).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autoscout_plugin import AutoScoutCallback


class Tiny(pl.LightningModule):
    def __init__(self, out: Path, fail_threads: int | None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
        self.batch_size = 8
        self.out, self.fail_threads = out, fail_threads
        self.started = False

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        node = os.environ["GROUP_RANK"]
        if not self.started:
            self.started = True
            (self.out / f"started{node}").write_text(str(os.getpid()))
        if node == "1" and torch.get_num_threads() == self.fail_threads:
            raise RuntimeError(f"a crash on node 1 with {self.fail_threads} threads")
        while (self.out / "hold").exists():
            time.sleep(0.05)
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(256, 16, generator=generator), torch.randn(256, 1, generator=generator))
        return DataLoader(data, batch_size=self.batch_size)


def make_trainer(callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(num_nodes=2, devices=1, accelerator="cpu", strategy="ddp", max_steps=3, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=callbacks, **kwargs)


def by_hand(args: argparse.Namespace, tuned: Tiny, fit: pl.Trainer) -> bool:
    """The same fit with the winner set by hand (no callback): the same weights, bit for bit?"""
    weights = {k: v.clone() for k, v in tuned.state_dict().items()}
    threads = torch.get_num_threads()
    pl.seed_everything(0, verbose=False)
    hand = Tiny(args.out, None)
    hand.batch_size = tuned.batch_size
    torch.set_num_threads(threads)
    make_trainer([], accumulate_grad_batches=fit.accumulate_grad_batches).fit(hand)
    torch.set_num_threads(threads)
    return all(torch.equal(value, hand.state_dict()[name]) for name, value in weights.items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--fail-threads", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)
    model = Tiny(args.out, args.fail_threads)
    callback = AutoScoutCallback(include=("num_threads", "micro_batch_size"), max_trials=args.trials, warmup_steps=1,
                                 measure_steps=2, patience=None, progress=False, parallel=args.parallel, net_gain=False,
                                 store=str(args.out / "store.sqlite"), report=str(args.out / "report"))
    trainer = make_trainer([callback])
    trainer.fit(model)
    no_trace = by_hand(args, model, trainer)
    node = os.environ["GROUP_RANK"]
    seen = {"node": int(node), "rank": trainer.global_rank, "world": trainer.world_size,
            "applied": callback.report.get("applied"), "threads": torch.get_num_threads(),
            "batch_size": model.batch_size, "accumulate": trainer.accumulate_grad_batches,
            "steps": trainer.global_step, "report": callback.report, "no_trace": no_trace}
    (args.out / f"node{node}.json").write_text(json.dumps(seen, default=str))


if __name__ == "__main__":
    main()
    # Like the HF two-process tests: gloo's C++ teardown at interpreter exit sometimes aborts after the work is
    # done; what the tests check is written by now.
    os._exit(0)
