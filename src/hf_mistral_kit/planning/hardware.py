"""What the machine can do, as plain data: GPU generation, memory, bf16, Flash Attention 2, bitsandbytes.

`Hardware.detect()` reads the real machine; `Hardware.profile(name)` returns a named profile (T4, A10G, ...) so
presets and memory plans can be resolved and tested for machines you do not have.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from dataclasses import dataclass

from packaging.version import Version

__all__ = ["Hardware", "PROFILES"]

# The versions transformers itself requires before it will use these packages.
FLASH_ATTN_MIN_VERSION = Version("2.3.3")
BITSANDBYTES_MIN_VERSION = Version("0.46.1")

# Flash Attention 2 and native bf16 math both start with Ampere (compute capability 8.0).
AMPERE = (8, 0)

# Kept free for cuBLAS workspaces and CUDA context when a profile describes a card by its nvidia-smi total.
CUDA_CONTEXT_BYTES = 512 * 2**20

GiB = 2**30
MiB = 2**20

# Peak memory bandwidth from the spec sheets (bytes/s), matched against the CUDA device name, most specific first.
# It bounds decode speed: every generated token reads all weights once.
_BANDWIDTH_BY_NAME: tuple[tuple[str, float], ...] = (
    ("H200", 4.8e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100", 1.555e12),
    ("A10G", 600e9),
    ("L40S", 864e9),
    ("L4", 300e9),
    ("RTX 4090", 1008e9),
    ("RTX 3090", 936e9),
    ("V100", 900e9),
    ("T4", 320e9),
)


@dataclass(frozen=True)
class Hardware:
    """The facts presets and memory plans depend on.

    `total_memory`/`free_memory` describe the device the model runs on: the GPU with CUDA, system RAM without.
    `bf16` means native bfloat16 math on that device (GPU compute capability >= 8.0; CPU avx512_bf16/AMX).
    `flash_attn`/`bitsandbytes` mean the package is installed in a version transformers accepts.
    """

    cuda: bool
    device_name: str
    compute_capability: tuple[int, int] | None
    total_memory: int
    free_memory: int
    bf16: bool
    flash_attn: bool
    bitsandbytes: bool
    cpu_memory: int
    cpu_bf16: bool = False
    cpu_amx: bool = False
    memory_bandwidth: float | None = None

    @property
    def is_ampere_or_newer(self) -> bool:
        return self.compute_capability is not None and self.compute_capability >= AMPERE

    @property
    def compute_capability_str(self) -> str:
        return "n/a" if self.compute_capability is None else "{}.{}".format(*self.compute_capability)

    def describe(self) -> str:
        """One line for notes and tables, e.g. 'Tesla T4 (compute capability 7.5, 14.5 GiB free)'."""
        if self.cuda:
            capability = f"compute capability {self.compute_capability_str}"
            return f"{self.device_name} ({capability}, {self.free_memory / GiB:.1f} GiB free)"
        return f"{self.device_name} (no CUDA GPU, {self.free_memory / GiB:.1f} GiB RAM free)"

    @classmethod
    def detect(cls) -> Hardware:
        """Read the current machine. Decides bf16 from the compute capability, not `torch.cuda.is_bf16_supported()`,
        which has reported True on a T4 (it emulates bf16 there, slowly)."""
        import torch

        cpu_flags = _cpu_flags()
        cpu_total, cpu_available = _system_memory()
        common = dict(
            flash_attn=_installed("flash-attn", FLASH_ATTN_MIN_VERSION),
            bitsandbytes=_installed("bitsandbytes", BITSANDBYTES_MIN_VERSION),
            cpu_memory=cpu_available,
            cpu_bf16=bool(cpu_flags & {"avx512_bf16", "amx_bf16"}),
            cpu_amx=("amx_bf16" in cpu_flags),
        )
        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            capability = (props.major, props.minor)
            return cls(
                cuda=True,
                device_name=props.name,
                compute_capability=capability,
                total_memory=total,
                free_memory=free,
                bf16=capability >= AMPERE,
                memory_bandwidth=_bandwidth_for(props.name),
                **common,
            )
        return cls(
            cuda=False,
            device_name=_cpu_name(),
            compute_capability=None,
            total_memory=cpu_total,
            free_memory=cpu_available,
            bf16=common["cpu_bf16"],
            **common,
        )

    @classmethod
    def profile(cls, name: str, **overrides) -> Hardware:
        """A named machine as plain data; keyword arguments replace fields (`flash_attn=False`, `free_memory=...`).

        GPU profiles assume `pip install flash-attn bitsandbytes` was done and 32 GiB of host RAM; memory is the
        nvidia-smi total with 512 MiB kept for the CUDA context. The "cpu" profile is a 32 GiB AVX2 box without
        native bf16, with bitsandbytes (which runs 4-bit and 8-bit on CPU since its multi-backend releases).
        """
        try:
            base = PROFILES[name]
        except KeyError:
            raise ValueError(f"unknown hardware profile {name!r}; choose one of {', '.join(PROFILES)}") from None
        return dataclasses.replace(base, **overrides)


def _bandwidth_for(device_name: str) -> float | None:
    return next((bandwidth for key, bandwidth in _BANDWIDTH_BY_NAME if key in device_name), None)


def _gpu(name: str, capability: tuple[int, int], total_mib: int) -> Hardware:
    total = total_mib * MiB
    return Hardware(
        cuda=True,
        device_name=name,
        compute_capability=capability,
        total_memory=total,
        free_memory=total - CUDA_CONTEXT_BYTES,
        bf16=capability >= AMPERE,
        flash_attn=True,
        bitsandbytes=True,
        cpu_memory=32 * GiB,
        memory_bandwidth=_bandwidth_for(name),
    )


PROFILES: dict[str, Hardware] = {
    "t4": _gpu("Tesla T4", (7, 5), 15360),
    "a10g": _gpu("NVIDIA A10G", (8, 6), 23028),
    "l4": _gpu("NVIDIA L4", (8, 9), 23034),
    "a100-40gb": _gpu("NVIDIA A100-SXM4-40GB", (8, 0), 40960),
    "a100-80gb": _gpu("NVIDIA A100-SXM4-80GB", (8, 0), 81920),
    "h100": _gpu("NVIDIA H100 80GB HBM3", (9, 0), 81559),
    "rtx4090": _gpu("NVIDIA GeForce RTX 4090", (8, 9), 24564),
    "cpu": Hardware(
        cuda=False,
        device_name="x86-64 CPU (AVX2)",
        compute_capability=None,
        total_memory=32 * GiB,
        free_memory=32 * GiB,
        bf16=False,
        flash_attn=False,
        bitsandbytes=True,
        cpu_memory=32 * GiB,
        memory_bandwidth=50e9,
    ),
}


def _installed(distribution: str, minimum: Version) -> bool:
    """Whether a package is installed in a usable version, from its metadata: importing flash-attn or
    bitsandbytes just to ask would load CUDA kernels (or fail loudly on machines without them)."""
    try:
        return Version(importlib.metadata.version(distribution)) >= minimum
    except importlib.metadata.PackageNotFoundError:
        return False


def _cpu_flags() -> set[str]:
    """Instruction-set flags from /proc/cpuinfo (Linux); empty elsewhere, which reads as 'no native bf16'."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _system_memory() -> tuple[int, int]:
    """(total, available) system RAM in bytes."""
    import psutil  # a dependency of accelerate

    memory = psutil.virtual_memory()
    return memory.total, memory.available
