"""Synthetic training workloads for the ground-truth tables.

Every workload has random weights (seed 0) and synthetic data, so nothing is downloaded. A workload
bundles the model, a seeded micro-batch maker, a loss function, the blocks that activation
checkpointing and FSDP wrap, and a ``describe()`` dict for the table's sidecar JSON.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


@dataclass(frozen=True)
class WorkloadSpec:
    """What the measurement grid needs to know about a workload without building it."""

    name: str
    global_batch: int
    micro_batch_sizes: tuple[int, int]


@dataclass
class BenchModel:
    """A built workload: model, data, loss, and the blocks to checkpoint or shard."""

    spec: WorkloadSpec
    model: nn.Module
    make_batch: Callable[[int, int], Batch]
    loss_fn: LossFn
    blocks: list[nn.Module]
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The workload description for the sidecar JSON, with parameter count and forward FLOPs."""
        out: dict[str, Any] = {"task": "train", **self.info, "global_batch": self.spec.global_batch}
        out["n_params"] = sum(p.numel() for p in self.model.parameters())
        out["fwd_flops_per_sample"] = forward_flops_per_sample(self)
        return out


# Global batches are sized so that an uncompiled trial takes about 5-15 s on the 2-core CPU here.
SPECS: dict[str, WorkloadSpec] = {
    "gpt2": WorkloadSpec("gpt2", global_batch=8, micro_batch_sizes=(2, 4)),
    "cnn": WorkloadSpec("cnn", global_batch=64, micro_batch_sizes=(8, 32)),
    "encoder": WorkloadSpec("encoder", global_batch=64, micro_batch_sizes=(8, 32)),
    "recurrent": WorkloadSpec("recurrent", global_batch=32, micro_batch_sizes=(8, 32)),
}

# Workloads for a GPU only (the GPU benchmark), kept out of the CPU measurement grid's choices.
GPU_SPECS: dict[str, WorkloadSpec] = {
    "gpt2_124m": WorkloadSpec("gpt2_124m", global_batch=16, micro_batch_sizes=(4, 8)),
}

SEQ_LEN = 128


def _generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def forward_flops_per_sample(workload: BenchModel) -> int:
    """FLOPs of one sample's forward pass (loss included) in fp32, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model = workload.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            workload.loss_fn(model, workload.make_batch(1, 0))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- gpt2


def build_gpt2() -> BenchModel:
    """GPT-2 decoder, 2 layers, d_model 128, 50k vocabulary, sequence length 128."""
    return _gpt2(SPECS["gpt2"], n_layer=2, n_embd=128, n_head=2, seq_len=SEQ_LEN)


def build_gpt2_124m() -> BenchModel:
    """GPT-2 small (124M parameters: 12 layers, d_model 768, 12 heads, 50k vocabulary), sequence length
    1024: the larger GPT-2 of the GPU benchmark (no ground-truth table; too slow for these CPUs)."""
    return _gpt2(GPU_SPECS["gpt2_124m"], n_layer=12, n_embd=768, n_head=12, seq_len=1024)


def _gpt2(spec: WorkloadSpec, *, n_layer: int, n_embd: int, n_head: int, seq_len: int) -> BenchModel:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=seq_len, vocab_size=50257)
    config.use_cache = False
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)

    def make_batch(batch_size: int, seed: int) -> Batch:
        ids = torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=_generator(seed))
        return {"input_ids": ids}

    def loss_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
        return m(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss

    info = {
        "family": "transformer",
        "arch": "decoder",
        "n_layer": config.n_layer,
        "d_model": config.n_embd,
        "n_head": config.n_head,
        "d_ff": config.n_inner or 4 * config.n_embd,
        "vocab": config.vocab_size,
        "seq_len": seq_len,
    }
    return BenchModel(spec, model, make_batch, loss_fn, list(model.transformer.h), info)


# --------------------------------------------------------------------------- encoder


def build_encoder() -> BenchModel:
    """BERT encoder for sequence classification, 2 layers, hidden 128, 8k vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        vocab_size=8192,
        max_position_embeddings=SEQ_LEN,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)

    def make_batch(batch_size: int, seed: int) -> Batch:
        gen = _generator(seed)
        ids = torch.randint(0, config.vocab_size, (batch_size, SEQ_LEN), generator=gen)
        labels = torch.randint(0, config.num_labels, (batch_size,), generator=gen)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    def loss_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
        return m(**batch).loss

    info = {
        "family": "transformer",
        "arch": "encoder",
        "n_layer": config.num_hidden_layers,
        "d_model": config.hidden_size,
        "n_head": config.num_attention_heads,
        "d_ff": config.intermediate_size,
        "vocab": config.vocab_size,
        "seq_len": SEQ_LEN,
    }
    return BenchModel(SPECS["encoder"], model, make_batch, loss_fn, list(model.bert.encoder.layer), info)


# --------------------------------------------------------------------------- cnn

CNN_INPUT = (3, 32, 32)
CNN_CLASSES = 10
# (out_channels, max-pool after the block)
CNN_BLOCKS: tuple[tuple[int, bool], ...] = ((32, False), (64, True), (128, True), (128, True))


class SmallCNN(nn.Module):
    """Four Conv-BN-ReLU(-MaxPool) blocks, global average pooling and a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_ch = CNN_INPUT[0]
        for out_ch, pool in CNN_BLOCKS:
            layers: list[nn.Module] = [
                nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            if pool:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.features = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, CNN_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.features:
            x = block(x)
        return self.classifier(torch.flatten(self.pool(x), 1))


def cnn_layers(model: nn.Module) -> list[dict[str, Any]]:
    """Conv2d and Linear layers in execution order, with output sizes found by a probe forward."""
    layers: list[dict[str, Any]] = []

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            layers.append(
                {
                    "type": "conv2d",
                    "in": module.in_channels,
                    "out": module.out_channels,
                    "kernel": module.kernel_size[0],
                    "stride": module.stride[0],
                    "out_hw": list(output.shape[-2:]),
                }
            )
        elif isinstance(module, nn.Linear):
            layers.append({"type": "linear", "in": module.in_features, "out": module.out_features})

    probed = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in probed]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *CNN_INPUT))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return layers


def build_cnn() -> BenchModel:
    """Small plain-torch CNN on 32x32x3 inputs, 10 classes, cross-entropy."""
    torch.manual_seed(0)
    model = SmallCNN()

    def make_batch(batch_size: int, seed: int) -> Batch:
        gen = _generator(seed)
        images = torch.randn(batch_size, *CNN_INPUT, generator=gen)
        labels = torch.randint(0, CNN_CLASSES, (batch_size,), generator=gen)
        return {"images": images, "labels": labels}

    def loss_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch["images"]), batch["labels"])

    info = {"family": "cnn", "input_shape": list(CNN_INPUT), "layers": cnn_layers(model)}
    return BenchModel(SPECS["cnn"], model, make_batch, loss_fn, list(model.features), info)


# --------------------------------------------------------------------------- recurrent

RECURRENT_SEQ_LEN = 64


@functools.cache
def linear_scan_op() -> Any:
    """The custom operator ``autoscout_bench::linear_scan``: ``h_t = a_t * h_(t-1) + x_t`` along dim 1.

    It stands in for the fused scan kernel of a recurrent model (minGRU, Mamba-style SSMs): registered
    with ``torch.library`` and its autograd formula, but with no fake (meta) kernel, as such kernels
    often ship. Eager training works; ``torch.compile`` fails deterministically while tracing it
    (``torch._dynamo.exc.TorchRuntimeError``: no fake impl registered), in every mode.
    """
    @torch.library.custom_op("autoscout_bench::linear_scan", mutates_args=())
    def linear_scan(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        h = torch.zeros_like(x[:, 0])
        for t in range(x.shape[1]):
            h = a[:, t] * h + x[:, t]
            out[:, t] = h
        return out

    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, torch.Tensor], output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0], output)

    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, h = ctx.saved_tensors
        # dL/dx_t = g_t + a_(t+1) dL/dx_(t+1): the same scan, backwards in time.
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)
        grad_x = linear_scan(a_next.flip(1), grad.flip(1)).flip(1)
        h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        return grad_x * h_prev, grad_x

    linear_scan.register_autograd(backward, setup_context=setup_context)
    return linear_scan


class MinGRUBlock(nn.Module):
    """Pre-norm minGRU (Feng et al. 2024, "Were RNNs All We Needed?") and a GELU MLP, each residual:
    ``z = sigmoid(W_z x)``, ``h_t = (1 - z_t) h_(t-1) + z_t W_h x_t``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.gate_and_candidate = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, candidate = self.gate_and_candidate(self.norm1(x)).chunk(2, dim=-1)
        z = torch.sigmoid(gate)
        x = x + self.out(linear_scan_op()(1 - z, z * candidate))
        return x + self.mlp(self.norm2(x))


class RecurrentLM(nn.Module):
    """Token embedding, minGRU blocks, a final norm and an untied LM head."""

    def __init__(self, vocab: int, d_model: int, n_layer: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(MinGRUBlock(d_model) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def build_recurrent() -> BenchModel:
    """A recurrent LM that torch.compile cannot trace: 2 minGRU blocks over a custom scan operator,
    d_model 128, 8k vocabulary, sequence length 64."""
    vocab, d_model, n_layer = 8192, 128, 2
    torch.manual_seed(0)
    model = RecurrentLM(vocab, d_model, n_layer)

    def make_batch(batch_size: int, seed: int) -> Batch:
        ids = torch.randint(0, vocab, (batch_size, RECURRENT_SEQ_LEN + 1), generator=_generator(seed))
        return {"input_ids": ids}

    def loss_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
        ids = batch["input_ids"]
        logits = m(ids[:, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))

    info = {"family": "recurrent", "arch": "decoder", "n_layer": n_layer, "d_model": d_model, "vocab": vocab,
            "seq_len": RECURRENT_SEQ_LEN}
    return BenchModel(SPECS["recurrent"], model, make_batch, loss_fn, list(model.blocks), info)


BUILDERS: dict[str, Callable[[], BenchModel]] = {
    "gpt2": build_gpt2,
    "gpt2_124m": build_gpt2_124m,
    "cnn": build_cnn,
    "encoder": build_encoder,
    "recurrent": build_recurrent,
}


def build(name: str) -> BenchModel:
    """Build the workload called ``name`` (one of ``BUILDERS``)."""
    try:
        return BUILDERS[name]()
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {sorted(BUILDERS)}") from None
