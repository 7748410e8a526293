"""The hardware catalogue: accelerators (peak FLOP/s per precision, memory, bandwidth) and links.

Peak figures are the vendors' dense (no sparsity) datasheet numbers:
- NVIDIA A100 datasheet (2021): 19.5 TF fp32, 156 TF tf32, 312 TF bf16/fp16; 40 GB HBM2 at
  1,555 GB/s or 80 GB HBM2e at 2,039 GB/s; NVLink 3 at 600 GB/s per GPU (both directions).
- NVIDIA H100 datasheet (2023): SXM 67 TF fp32, 495 TF tf32, 989 TF bf16, 1,979 TF fp8, 80 GB at
  3.35 TB/s, NVLink 4 at 900 GB/s; PCIe 51 / 378 / 756 / 1,513 TF, 80 GB at 2.0 TB/s, PCIe 5.
- NVIDIA H200 datasheet (2024): H100 SXM compute, 141 GB HBM3e at 4.8 TB/s.
- NVIDIA L4 datasheet: 30.3 TF fp32, 121 TF bf16, 242 TF fp8, 24 GB at 300 GB/s, PCIe 4.
- NVIDIA L40S datasheet: 91.6 TF fp32, 362 TF bf16, 733 TF fp8, 48 GB at 864 GB/s, PCIe 4.
- AMD Instinct MI300X datasheet: 163.4 TF fp32, 1,307 TF bf16, 2,615 TF fp8, 192 GB at 5.3 TB/s,
  Infinity Fabric 896 GB/s aggregate per GPU.
- NVIDIA HGX B200 / GB200 NVL72 datasheets (2024; tensor figures there are sparse, halved here):
  B200 75 TF fp32, 1,100 TF tf32, 2,250 TF bf16, 4,500 TF fp8, 180 GB at 7.7 TB/s; GB200 80 / 1,250 /
  2,500 / 5,000 TF, 186 GB at 8 TB/s, 72 GPUs in one NVLink domain; NVLink 5 at 1.8 TB/s per GPU.
- NVIDIA V100 SXM2 datasheet (2018): 15.7 TF fp32, 125 TF fp16 (no bf16, no tf32), 32 GB at 900 GB/s,
  NVLink 2 at 300 GB/s. T4: 8.1 TF fp32, 65 TF fp16, 16 GB at 320 GB/s, PCIe 3. A10: 31.2 TF fp32,
  62.5 TF tf32, 125 TF bf16, 24 GB at 600 GB/s, PCIe 4.

Link bandwidths are what a ring collective achieves per GPU (NCCL `busbw`), below the wire rate:
NVLink 3 about 230 GB/s, NVLink 4 about 370 GB/s (nccl-tests on DGX A100/H100), one 200 Gb/s HDR
InfiniBand NIC per GPU about 23 GB/s, one 400 Gb/s NDR NIC about 45 GB/s. NVLink 2 and 5 take the
same share (about 0.8) of their per-direction wire rate, 150 and 900 GB/s; 100 Gb/s EDR about 11 GB/s.

`gemm_efficiency` is the fraction of peak a large bf16 GEMM sustains (cuBLAS/hipBLASLt benchmarks:
about 0.8 on A100, 0.77 on H100/H200 (760 of 989 TF for 8192-cubed bf16), 0.55 on MI300X); it is
the main factor calibration refits. For B200/GB200, V100, T4 and A10 it is an assumption (0.7, 0.8,
0.6, 0.65), not a measured figure: calibrate from a few trials before trusting their absolute speeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

GIB = float(2**30)
TF = 1e12


@dataclass(frozen=True, slots=True)
class Link:
    """An interconnect, alpha-beta (Hockney 1994): a message of n bytes takes `latency_s + n / bytes_per_s`."""

    name: str
    bytes_per_s: float
    """Achieved per-GPU bandwidth of a ring collective (bus bandwidth)."""
    latency_s: float


LINKS: dict[str, Link] = {
    "nvlink3": Link("nvlink3", 230e9, 8e-6),
    "nvlink4": Link("nvlink4", 370e9, 6e-6),
    "nvlink5": Link("nvlink5", 740e9, 6e-6),
    "nvlink2": Link("nvlink2", 120e9, 10e-6),
    "xgmi": Link("xgmi", 300e9, 8e-6),
    "pcie3": Link("pcie3", 11e9, 10e-6),
    "pcie4": Link("pcie4", 22e9, 10e-6),
    "pcie5": Link("pcie5", 45e9, 10e-6),
    "ib-hdr": Link("ib-hdr", 23e9, 12e-6),
    "ib-ndr": Link("ib-ndr", 45e9, 10e-6),
    "ib-edr": Link("ib-edr", 11e9, 12e-6),
    "ethernet-100g": Link("ethernet-100g", 10e9, 30e-6),
    "shm": Link("shm", 5e9, 20e-6),
}


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One accelerator type and the node it usually sits in."""

    name: str
    peak_flops: dict[str, float]
    """Dense peak FLOP/s by math precision: `fp32`, `tf32`, `bf16`, `fp16`, `fp8`."""
    mem_gib: float
    mem_bytes_per_s: float
    intra_link: str
    """Link between devices of one node (a `LINKS` key)."""
    inter_link: str
    """Link between nodes, per device."""
    gpus_per_node: int = 8
    gemm_efficiency: float = 0.75
    """Fraction of peak a large GEMM sustains."""
    aliases: tuple[str, ...] = field(default=())

    def peak(self, precision: str) -> float:
        """Peak FLOP/s for a training precision (`bf16`, `fp16`, `fp8`, `fp32`, `tf32`)."""
        aliases = {"bf16-mixed": "bf16", "16-mixed": "fp16", "bf16-true": "bf16", "32-true": "fp32"}
        key = aliases.get(precision, precision)
        if key not in self.peak_flops:
            have = ", ".join(sorted(self.peak_flops))
            raise ValueError(f"{self.name} has no {precision!r} math; it supports {have}")
        return self.peak_flops[key]

    @property
    def half_precision(self) -> str:
        """The device's 16-bit math: `bf16`, or `fp16` on GPUs without it (V100, T4)."""
        return "bf16" if "bf16" in self.peak_flops else "fp16"

    @property
    def intra(self) -> Link:
        return LINKS[self.intra_link]

    @property
    def inter(self) -> Link:
        return LINKS[self.inter_link]


def _nv(name: str, fp32: float, tf32: float, bf16: float, fp8: float | None, mem_gib: float, bw: float,
        intra: str, inter: str, eff: float, aliases: tuple[str, ...] = (), per_node: int = 8) -> Accelerator:
    peaks = {"fp32": fp32 * TF, "tf32": tf32 * TF, "bf16": bf16 * TF, "fp16": bf16 * TF}
    if fp8:
        peaks["fp8"] = fp8 * TF
    return Accelerator(name, peaks, mem_gib, bw, intra, inter, per_node, eff, aliases)


GPUS: dict[str, Accelerator] = {a.name: a for a in (
    _nv("a100-40gb", 19.5, 156, 312, None, 40, 1.555e12, "nvlink3", "ib-hdr", 0.80, ("a100",)),
    _nv("a100-80gb", 19.5, 156, 312, None, 80, 2.039e12, "nvlink3", "ib-hdr", 0.80),
    _nv("h100-sxm", 67, 495, 989, 1979, 80, 3.35e12, "nvlink4", "ib-ndr", 0.77, ("h100",)),
    _nv("h100-pcie", 51, 378, 756, 1513, 80, 2.0e12, "pcie5", "ib-ndr", 0.70),
    _nv("h200", 67, 495, 989, 1979, 141, 4.8e12, "nvlink4", "ib-ndr", 0.77),
    _nv("l4", 30.3, 120, 121, 242, 24, 0.3e12, "pcie4", "ethernet-100g", 0.70),
    _nv("l40s", 91.6, 183, 362, 733, 48, 0.864e12, "pcie4", "ethernet-100g", 0.65),
    Accelerator("mi300x", {"fp32": 163.4 * TF, "tf32": 653.7 * TF, "bf16": 1307.4 * TF, "fp16": 1307.4 * TF,
                           "fp8": 2614.9 * TF}, 192, 5.3e12, "xgmi", "ib-ndr", 8, 0.55),
    _nv("b200", 75, 1100, 2250, 4500, 180, 7.7e12, "nvlink5", "ib-ndr", 0.70),
    _nv("gb200", 80, 1250, 2500, 5000, 186, 8.0e12, "nvlink5", "ib-ndr", 0.70, per_node=72),
    _nv("a10", 31.2, 62.5, 125, None, 24, 0.6e12, "pcie4", "ethernet-100g", 0.65),
    # Volta and Turing: fp16 tensor cores, no bf16 and no tf32
    Accelerator("v100", {"fp32": 15.7 * TF, "fp16": 125 * TF}, 32, 0.9e12, "nvlink2", "ib-edr", 8, 0.80,
                ("v100-32gb", "v100-sxm2")),
    Accelerator("t4", {"fp32": 8.1 * TF, "fp16": 65 * TF}, 16, 0.32e12, "pcie3", "ethernet-100g", 8, 0.60),
)}


def gpu(name: str) -> Accelerator:
    """Look up an accelerator by catalogue name or alias (case-insensitive).

    Example:
        >>> gpu("H100-SXM").peak("bf16") / 1e12
        989.0
    """
    key = name.strip().lower()
    for acc in GPUS.values():
        if key == acc.name or key in acc.aliases:
            return acc
    raise ValueError(f"unknown GPU {name!r}; known: {', '.join(GPUS)} (aliases: a100, h100, v100-sxm2)")


def match_device(device_name: str | None, mem_gb: float | None = None) -> Accelerator | None:
    """The catalogue entry of a device as the driver names it (`torch.cuda.get_device_name()`), or
    None for a device the catalogue does not hold. The memory size (GB) tells the A100 40/80 GB apart.

    Example:
        >>> match_device("NVIDIA H100 80GB HBM3").name, match_device("NVIDIA A100-SXM4-40GB", 42.4).name
        ('h100-sxm', 'a100-40gb')
        >>> match_device("Tesla V100-SXM2-32GB").name, match_device("NVIDIA B200").name
        ('v100', 'b200')
        >>> match_device("NVIDIA GeForce RTX 4090") is None, match_device("NVIDIA A10G") is None
        (True, True)
    """
    name = (device_name or "").upper().replace("-", " ")
    if "H200" in name:
        return GPUS["h200"]
    if "H100" in name:
        return GPUS["h100-pcie" if "PCIE" in name else "h100-sxm"]
    if "A100" in name:
        big = "80GB" in name.replace(" ", "") or (mem_gb is not None and mem_gb > 60)
        return GPUS["a100-80gb" if big else "a100-40gb"]
    if "L40S" in name:
        return GPUS["l40s"]
    if name.endswith(" L4") or name == "L4":
        return GPUS["l4"]
    if "MI300X" in name:
        return GPUS["mi300x"]
    if "GB200" in name:
        return GPUS["gb200"]
    if "B200" in name:
        return GPUS["b200"]
    if "V100" in name:
        return GPUS["v100"]
    words = name.split()
    if "T4" in words:
        return GPUS["t4"]
    if "A10" in words:  # not the A10G, whose tensor rate differs
        return GPUS["a10"]
    return None


def with_efficiency(acc: Accelerator, gemm_efficiency: float) -> Accelerator:
    """A copy with a refit GEMM efficiency (what calibration from measured trials changes)."""
    if not 0.0 < gemm_efficiency <= 1.0:
        raise ValueError(f"gemm_efficiency must be in (0, 1], got {gemm_efficiency}")
    return replace(acc, gemm_efficiency=gemm_efficiency)
