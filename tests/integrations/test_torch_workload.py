"""Describing a user's module for the cost model: Hugging Face configs and layer introspection."""

from __future__ import annotations

import torch
from autoscout_plugin.integrations._torch import layers_from_module, workload_from_module
from torch import nn

from autoscout_plugin.costmodel import CostModel, Hardware, Layer
from autoscout_plugin.costmodel.compute import fwd_flops_per_sample


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def test_layers_are_read_from_one_forward_pass_by_hand() -> None:
    model = SmallCNN().train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    layers = layers_from_module(model, (x, y))  # a (inputs, targets) batch: the first item is the input
    assert layers == (Layer(type="conv2d", in_features=3, out_features=8, kernel=3, out_hw=(16, 16)),
                      Layer(type="linear", in_features=2048, out_features=10, out_hw=(1, 1)))
    # conv 2*9*3*8*256 + linear 2*2048*10 FLOPs per sample
    w = workload_from_module(model, global_batch=4, example=(x, y))
    assert w.family == "cnn" and fwd_flops_per_sample(w) == 2 * 9 * 3 * 8 * 256 + 2 * 2048 * 10
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats untouched
    assert torch.equal(rng, torch.get_rng_state())
    assert CostModel(w, Hardware(cores=2)).estimate({"micro_batch_size": 4}).samples_per_s > 0


def test_sequence_linears_count_their_positions() -> None:
    mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4))
    layers = layers_from_module(mlp, {"x": torch.randn(2, 7, 16)})
    assert [layer.out_hw for layer in layers] == [(7, 1), (7, 1)]
    assert workload_from_module(mlp, global_batch=2, example={"x": torch.randn(2, 7, 16)}).family == "mlp"


def test_an_input_the_module_refuses_gives_no_layers_and_the_generic_description() -> None:
    model = SmallCNN()
    assert layers_from_module(model, "not a tensor") == ()
    w = workload_from_module(model, global_batch=4, example="not a tensor")
    assert w.family == "unknown" and w.n_params == sum(p.numel() for p in model.parameters())
