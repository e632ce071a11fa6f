"""`hf-mistral-kit doctor`: what is installed, which devices there are, and which presets work on this machine."""

from __future__ import annotations

import argparse
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .common import ExitCode

PACKAGES = (
    "hf-mistral-kit",
    "torch",
    "transformers",
    "accelerate",
    "bitsandbytes",
    "flash-attn",
    "peft",
    "mistral-common",
    "safetensors",
)
GiB = 2**30


def run(args: argparse.Namespace) -> int:
    report = collect()
    print(json.dumps(report, indent=2) if args.json else _text(report))
    return ExitCode.OK


def collect() -> dict[str, Any]:
    """Versions, CUDA devices and preset availability as plain data (what `--json` prints)."""
    import torch

    from ..planning.hardware import Hardware
    from ..planning.presets import PRESETS, PresetError, resolve_preset

    hardware = Hardware.detect()
    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            devices.append(
                {
                    "index": index,
                    "name": properties.name,
                    "compute_capability": f"{properties.major}.{properties.minor}",
                    "total_memory_gib": round(total / GiB, 2),
                    "free_memory_gib": round(free / GiB, 2),
                }
            )
    presets = {}
    for name in PRESETS:
        try:
            resolved = resolve_preset(name, hardware)
        except (PresetError, ImportError) as error:
            presets[name] = {"available": False, "why": str(error)}
        else:
            presets[name] = {"available": True, "notes": list(resolved.notes)}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {package: _version(package) for package in PACKAGES},
        "torch_cuda": torch.version.cuda,
        "hardware": hardware.describe(),
        "bf16": hardware.bf16,
        "flash_attn": hardware.flash_attn,
        "bitsandbytes": hardware.bitsandbytes,
        "cuda_devices": devices,
        "presets": presets,
    }


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _text(report: dict[str, Any]) -> str:
    lines = [f"python {report['python']} on {report['platform']}", "", "packages:"]
    width = max(map(len, report["packages"]))
    for package, installed in report["packages"].items():
        lines.append(f"  {package:{width}}  {installed or 'not installed'}")
    lines += ["", f"torch CUDA build: {report['torch_cuda'] or 'none (CPU-only torch)'}", "devices:"]
    if not report["cuda_devices"]:
        lines.append("  no CUDA device: models run on the CPU")
    for device in report["cuda_devices"]:
        lines.append(
            f"  cuda:{device['index']}  {device['name']}  compute capability {device['compute_capability']}  "
            f"{device['free_memory_gib']:.1f} / {device['total_memory_gib']:.1f} GiB free"
        )
    lines += ["", f"presets on {report['hardware']}:"]
    width = max(map(len, report["presets"]))
    for name, status in report["presets"].items():
        if status["available"]:
            lines.append(f"  {name:{width}}  available")
            lines += [f"  {'':{width}}    - {note}" for note in status["notes"]]
        else:
            lines.append(f"  {name:{width}}  not available: {status['why']}")
    return "\n".join(lines)
