"""F0 on several nodes: each node's processes share only that node's cores and memory, a collective
that crosses nodes runs at the inter-node link's pace, and a multi-node job's trials refit that link."""

from __future__ import annotations

import math
from dataclasses import replace

from autoscout_plugin.costmodel import CostModel, Hardware, Workload
from autoscout_plugin.costmodel.calibrate import Measurement, calibrate

WORKLOAD = Workload(family="transformer", n_layer=2, d_model=256, n_head=4, vocab=8192, seq_len=64, global_batch=32)
CPU = Hardware(kind="cpu", cores=2, bf16=True)
DDP = {"strategy": "ddp", "num_threads": 2, "micro_batch_size": 8}


def test_processes_on_other_nodes_do_not_share_this_nodes_cores_or_memory() -> None:
    model = CostModel(WORKLOAD, CPU)
    two_nodes = {**DDP, "num_processes": 1, "num_nodes": 2}
    one_node = {**DDP, "num_processes": 2}  # the same world squeezed on one node: 4 threads on 2 cores
    assert model.peak_mem_mb(two_nodes) < 0.6 * model.peak_mem_mb(one_node)
    assert model.estimate(two_nodes).breakdown["compute_s"] < model.estimate(one_node).breakdown["compute_s"]


def test_a_slower_inter_node_link_slows_only_multi_node_configs() -> None:
    fast = CostModel(WORKLOAD, CPU)
    slow = fast.with_efficiency(replace(fast.eff, inter_link_bytes_per_s=fast.eff.inter_link_bytes_per_s / 50))
    two_nodes = {**DDP, "num_processes": 1, "num_nodes": 2, "num_threads": 1}
    one_node = {**DDP, "num_processes": 2, "num_threads": 1}
    assert slow.estimate(two_nodes).breakdown["comm_s"] > 5 * fast.estimate(two_nodes).breakdown["comm_s"]
    assert slow.estimate(one_node).samples_per_s == fast.estimate(one_node).samples_per_s


def test_a_multi_node_jobs_own_trials_calibrate_the_inter_node_link() -> None:
    prior = CostModel(WORKLOAD, CPU)
    truth = prior.with_efficiency(replace(prior.eff, inter_link_bytes_per_s=0.05e9))
    configs = [{**DDP, "num_processes": p, "num_nodes": 2, "num_threads": t, "micro_batch_size": m}
               for p, t, m in ((1, 1, 8), (1, 2, 16), (2, 1, 4), (1, 2, 4))]
    fitted = calibrate(prior, [Measurement(c, truth.samples_per_s(c)) for c in configs])
    assert "inter_link_bytes_per_s" in [name for name, _, _ in fitted.params]
    assert fitted.model.eff.inter_link_bytes_per_s < prior.eff.inter_link_bytes_per_s  # towards the truth

    def error(model: CostModel) -> float:
        return sum(abs(math.log(model.samples_per_s(c) / truth.samples_per_s(c))) for c in configs) / len(configs)

    assert error(fitted.model) < 0.5 * error(prior)
    single = calibrate(prior, [Measurement({**DDP, "num_processes": 2}, 100.0)])
    assert "inter_link_bytes_per_s" not in [name for name, _, _ in single.params]  # nothing measured across nodes
    assert len(single.log_std([DDP])) == 1
    # Every measured config spans both nodes: the link within a node cannot be told apart, and stays put.
    assert fitted.model.eff.link_bytes_per_s == prior.eff.link_bytes_per_s
