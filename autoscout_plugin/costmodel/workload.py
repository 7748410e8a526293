"""What is being trained or served, in the terms the cost model needs.

Built from a ground-truth table's JSON (`Workload.from_json`), from a Hugging Face config or by
introspecting a module (in the integrations). Fields the source cannot give stay `None`; the cost
model then falls back to what it can know (parameter count, measured FLOPs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class Layer:
    """One compute layer of a non-transformer model (CNN / MLP)."""

    type: Literal["conv2d", "linear"]
    """`conv2d` or `linear`."""
    in_features: int
    """Input channels (conv) or features (linear)."""
    out_features: int
    """Output channels (conv) or features (linear)."""
    kernel: int = 1
    """Square kernel size (conv)."""
    out_hw: tuple[int, int] = (1, 1)
    """Output height and width (conv)."""

    def fwd_flops(self) -> float:
        """2 FLOPs per multiply-add: conv `2*k*k*cin*cout*H*W`, linear `2*in*out`."""
        return 2.0 * self.kernel * self.kernel * self.in_features * self.out_features * self.out_hw[0] * self.out_hw[1]

    def n_params(self) -> int:
        return self.kernel * self.kernel * self.in_features * self.out_features + self.out_features


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """A training or inference workload.

    Example:
        >>> w = Workload(family="transformer", n_layer=2, d_model=128, n_head=2, vocab=50257, seq_len=128,
        ...              global_batch=16)
        >>> w.d_ff
        512
    """

    task: Literal["train", "finetune", "infer"] = "train"
    """What the job does."""
    family: str = "unknown"
    """`transformer`, `cnn`, `mlp` or anything else (then only generic facts are used)."""
    arch: Literal["decoder", "encoder"] = "decoder"
    """Transformer flavour: a decoder has an LM head over the vocabulary."""
    n_layer: int | None = None
    d_model: int | None = None
    n_head: int | None = None
    d_ff: int | None = None
    """Feed-forward width; defaults to 4 * d_model."""
    n_kv_head: int | None = None
    """Key/value heads under grouped-query attention (Llama-2 70B, Llama-3); None means `n_head`."""
    gated_mlp: bool = False
    """A SwiGLU feed-forward (three `d x d_ff` matrices, Llama) instead of GELU (two, GPT)."""
    tied_embeddings: bool = True
    """Whether the LM head shares the token embedding (GPT-2/3) or has its own matrix (Llama)."""
    learned_positions: bool = True
    """Learned position embeddings (GPT) rather than rotary ones (Llama)."""
    vocab: int | None = None
    seq_len: int | None = None
    global_batch: int | None = None
    """Samples per optimizer step across all data-parallel ranks."""
    n_params: int | None = None
    """Parameter count; derived for transformers and layer lists when not given."""
    fwd_flops_per_sample: float | None = None
    """Measured forward FLOPs of one sample, used when the architecture is unknown."""
    layers: tuple[Layer, ...] = field(default=())
    """Layer shapes of a CNN/MLP."""
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.family == "transformer" and self.d_model and self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        for name in ("n_layer", "d_model", "n_head", "vocab", "seq_len", "global_batch", "n_params"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"workload {name} must be >= 1, got {value}")
        if self.n_head and self.d_model and self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or (self.n_head and self.n_head % self.n_kv_head)):
            raise ValueError(f"n_kv_head={self.n_kv_head} must be >= 1 and divide n_head={self.n_head}")

    @property
    def kv_dim(self) -> int:
        """Width of the key (or value) projection: `d_model * n_kv_head / n_head`."""
        assert self.d_model
        if self.n_kv_head and self.n_head:
            return self.d_model * self.n_kv_head // self.n_head
        return self.d_model

    @property
    def is_transformer(self) -> bool:
        return self.family == "transformer" and None not in (self.n_layer, self.d_model, self.seq_len)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Workload:
        """From a ground-truth table's `workload` object; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and k != "layers"}
        if "input_shape" in kwargs and kwargs["input_shape"] is not None:
            kwargs["input_shape"] = tuple(kwargs["input_shape"])
        layers = []
        for layer in data.get("layers", []) or []:
            layers.append(Layer(type=layer["type"], in_features=int(layer.get("in", layer.get("in_features", 1))),
                                out_features=int(layer.get("out", layer.get("out_features", 1))),
                                kernel=int(layer.get("kernel", 1)),
                                out_hw=tuple(layer.get("out_hw", (1, 1)))))  # type: ignore[arg-type]
        return cls(**kwargs, layers=tuple(layers))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [asdict(layer) for layer in self.layers]
        return data
